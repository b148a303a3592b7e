"""Redis ACL users of the queue on the node (the ``queue_redis`` role writes them; a test holds the two in step).

Two users, no ``default``: the agent's, and the functions' (``router``: the router and queue_health). Keys are
the contract's patterns only. Every command a Lua script runs is checked against the calling user's rules
(Redis 7), so the scripts the router may run (``EVAL``/``EVALSHA``) can do nothing the router could not do itself.
"""

from __future__ import annotations

from typing import Final

# (CLIENT SETINFO, which redis-py sends and shrugs off when refused, is Redis 7.2: Debian 12 has 7.0.)
_CONNECT: Final = "+ping +hello +auth +client|setname"
# What the router (throttle, enqueue, heartbeat, progress, wake) and queue_health (PING) need, and nothing else.
ROUTER_RULES: Final = " ".join(
    (
        "resetkeys ~job:* ~owner:* ~rate:* ~tl:queue ~tl:wake",
        "%R~tl:heartbeat %R~result:* %R~reply:* %R~attempts:*",
        "resetchannels -@all",
        _CONNECT,
        "+get +exists +xrange +xlen +set +getdel +del +expire +hmget +hset +time +xadd +multi +exec",
        "+eval +evalsha +script|load +script|exists",
    )
)
# The agent and the watchdog: everything on the project's keys but the dangerous and administrative commands
# (no FLUSHALL, CONFIG, KEYS, DEBUG, SHUTDOWN, MONITOR); INFO for the memory figure it publishes.
AGENT_RULES: Final = " ".join(
    (
        "resetkeys ~job:* ~owner:* ~rate:* ~attempts:* ~result:* ~reply:* ~tl:*",
        "resetchannels -@all +@read +@write +@stream +@hash +@list +@string +@keyspace +@scripting +@transaction",
        _CONNECT,
        "-@dangerous -@admin +info",
    )
)
USERS: Final = {"agent": AGENT_RULES, "router": ROUTER_RULES}
