"""The HTTP API on localhost: the same routes, authorizer rules, CORS and access log as the AWS edge."""
