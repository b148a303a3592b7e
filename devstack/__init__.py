"""The local stack: real redis-server, moto server and model server on free loopback ports."""
