"""shape_control: ``POST /resize?target=…`` — stop the node, change its instance type, start it (admins only)."""
