"""``tl``: log in with Cognito and talk to the tinyllama-shape API from a terminal."""
