"""When the node may stop itself. Pure decisions on a monotonic clock; the agent feeds it observations."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IdleClock:
    """Tracks idleness and the stop deadline.

    The node is idle when no job is in flight, the queue is empty and the backend runs and waits for nothing.
    It stops ``default_s`` after it became idle, or later when a finished job asked to keep the node warm for
    longer (``idle_minutes`` of that job, counted from the job's end). A job never shortens the default.
    """

    default_s: float
    idle_since: float | None = None
    keep_warm_until: float = 0.0

    def observe(self, now: float, *, busy: bool) -> None:
        if busy:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now

    def job_finished(self, now: float, idle_minutes: int) -> None:
        self.keep_warm_until = max(self.keep_warm_until, now + idle_minutes * 60)

    def deadline(self) -> float | None:
        """When the node should stop, or None while it is busy."""
        if self.idle_since is None:
            return None
        return max(self.idle_since + self.default_s, self.keep_warm_until)

    def remaining(self, now: float) -> float | None:
        deadline = self.deadline()
        return None if deadline is None else max(deadline - now, 0.0)

    def restart(self, now: float) -> None:
        """Start a new idle period (after a dry-run stop, or a stop call that failed)."""
        self.idle_since = now
