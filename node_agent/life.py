"""What the agent's three parts share: the node's state as the heartbeat tells it, and the events between loops.

The thin agent (``node_agent.agent``) owns one ``Life``; the job runner (``node_agent.jobs``) and the idle
stopper (``node_agent.idle_stop``) read and set it. Nothing here does I/O."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Final, Literal

RECLAIM_EVERY_S: Final = 1.0
"""How often the claim loop sweeps for expired claims (a dead agent's jobs, a retry's back-off run out)."""

State = Literal["starting", "ready", "busy", "draining", "stopping"]


@dataclass
class Life:
    state: State = "starting"
    """``starting`` until the model server answers; ``ready`` (``busy`` while jobs run, as the heartbeat says it);
    ``draining`` after SIGTERM; ``stopping`` once the agent decided to stop the node, to the end."""
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by SIGTERM/SIGINT: every loop ends."""
    slot_free: asyncio.Event = field(default_factory=asyncio.Event)
    """A job ended (or shutdown): the claim loop may claim again."""
    wake_idle: asyncio.Event = field(default_factory=asyncio.Event)
    """Something changed that the idle check should see now (a job claimed, ended, adopted)."""
    adopt_now: asyncio.Event = field(default_factory=asyncio.Event)
    """Look for parked requests now (Redis came back, a stop was called off)."""
    claim_paused_until: float = 0.0
    """Monotonic time until which nothing is claimed (the node is being stopped)."""
    swept_at: float = 0.0
    """Monotonic time of the claim loop's last sweep for expired claims."""

    def claiming_paused(self) -> bool:
        return time.monotonic() < self.claim_paused_until

    def may_claim(self) -> bool:
        """Whether the agent takes on jobs: not once it shuts down, nor while its claims are paused."""
        return not self.shutdown.is_set() and not self.claiming_paused()

    def sweep_due(self) -> bool:
        return time.monotonic() - self.swept_at >= RECLAIM_EVERY_S

    def may_refill(self) -> bool:
        """Whether a finished job may claim the next one for its slot itself. Not when the agent may not claim, and
        not once a sweep is due: then the slot goes to the claim loop, which sweeps first, so that a steady flow of
        new jobs never starves expired ones."""
        return self.may_claim() and not self.sweep_due()
