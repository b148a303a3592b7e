"""The idle clock: when the node may stop itself."""

from __future__ import annotations

from node_agent.idle import IdleClock


def test_deadline_is_default_after_becoming_idle() -> None:
    clock = IdleClock(default_s=300)
    clock.observe(100.0, busy=False)
    assert clock.deadline() == 400.0
    assert clock.remaining(350.0) == 50.0
    assert clock.remaining(500.0) == 0.0


def test_busy_node_has_no_deadline_and_idleness_restarts_from_the_end_of_work() -> None:
    clock = IdleClock(default_s=300)
    clock.observe(100.0, busy=False)
    clock.observe(200.0, busy=True)
    assert clock.deadline() is None
    clock.observe(250.0, busy=False)
    clock.observe(260.0, busy=False)  # still idle: the idle period keeps its start
    assert clock.deadline() == 550.0


def test_job_asking_for_more_idle_minutes_keeps_the_node_warm_longer() -> None:
    clock = IdleClock(default_s=300)
    clock.job_finished(1000.0, idle_minutes=30)
    clock.observe(1000.0, busy=False)
    assert clock.deadline() == 1000.0 + 30 * 60


def test_job_never_shortens_the_default() -> None:
    clock = IdleClock(default_s=300)
    clock.job_finished(1000.0, idle_minutes=1)
    clock.observe(1000.0, busy=False)
    assert clock.deadline() == 1300.0


def test_restart_begins_a_new_idle_period() -> None:
    clock = IdleClock(default_s=10)
    clock.observe(0.0, busy=False)
    clock.restart(10.0)
    assert clock.deadline() == 20.0
