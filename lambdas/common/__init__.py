"""Code shared by every function: settings, HTTP events, authentication, metrics, logs and the node."""
