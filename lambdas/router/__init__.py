"""The router: authenticate, validate, throttle, enqueue, start the node when it sleeps, report results."""
