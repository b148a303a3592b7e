"""The job contract shared by the router Lambda and the node agent.

``jobqueue.contract``: keys, limits and the JSON schema (no Redis client needed, so every function can use it);
``jobqueue.queue``: the operations, as Lua scripts run by a synchronous (router) or asyncio (agent) client.
"""
