"""budget_killer: the budget's last word. SNS from the "actual over budget" alarm stops and holds the node."""
