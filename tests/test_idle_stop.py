"""Idle self-stop against the moto server's EC2: stops when idle, never while work is in flight or queued."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from devstack.procs import free_port, wait_until
from devstack.stack import Stack, StandInServer
from jobqueue import contract

pytestmark = pytest.mark.slow

IDLE_3S = {"TL_IDLE_MINUTES": "0.05", "TL_STOP_MODE": "stop", "TL_IDLE_POLL_S": "0.2"}


def test_idle_node_stops_itself_and_counts_the_stop(stack: Stack, standin: StandInServer) -> None:
    port = free_port()
    agent = stack.start_agent(standin.url, TL_METRICS_PORT=str(port), **IDLE_3S)
    started = time.monotonic()
    wait_until(lambda: stack.node_state() == "stopped", 15, "the instance to stop")
    assert time.monotonic() - started >= 2.5  # not before its idle time
    log = agent.log_path.read_text()
    assert "idle stop: StopInstances called" in log
    assert "with no job, empty queue, idle backend" in log
    # counted once StopInstances went through, so just after the instance's state changes: waited for, briefly
    wait_until(lambda: "tl_auto_stops_total 1.0" in httpx.get(f"http://127.0.0.1:{port}/metrics").text, 5,
               "the stop to be counted")  # fmt: skip
    cloudwatch = stack.cloudwatch()
    wait_until(lambda: bool(cloudwatch.list_metrics(Namespace="TLFIF", MetricName="AutoStops")["Metrics"]), 5,
               "AutoStops to be sent to CloudWatch")  # fmt: skip


def test_node_does_not_stop_while_a_job_runs_and_stays_warm_as_the_job_asked(
    stack: Stack, slow_standin: StandInServer
) -> None:
    stack.start_agent(slow_standin.url, TL_HEARTBEAT_S="0.5", **IDLE_3S)
    job = stack.submit("four seconds of work", idle_minutes=2)
    wait_until(lambda: slow_standin.stats()["running"] == 1, 5, "the job to run")
    time.sleep(3.5)  # longer than the 3 s idle time
    assert stack.node_state() == "running"
    stack.wait_reply(job["id"], 20)
    wait_until(lambda: (stack.queue().heartbeat() or {}).get("idle_stop_in_s") is not None, 5, "idle again")
    remaining = (stack.queue().heartbeat() or {})["idle_stop_in_s"]
    assert 100 < remaining <= 120  # the job's 2 idle minutes, not the node's 3 s
    assert stack.node_state() == "running"


def test_node_does_not_stop_while_a_job_is_queued(stack: Stack, standin: StandInServer) -> None:
    job = stack.submit("claimed by an agent that then died")
    r = stack.redis.client()
    r.xgroup_create(contract.QUEUE_STREAM, contract.CONSUMER_GROUP, id="0")
    r.xreadgroup(contract.CONSUMER_GROUP, "ghost", {contract.QUEUE_STREAM: ">"}, count=1)
    stack.start_agent(standin.url, TL_CLAIM_TIMEOUT_S="8", **IDLE_3S)
    time.sleep(5)  # the job is queued but not yet due for a reclaim
    assert stack.node_state() == "running"
    assert stack.wait_reply(job["id"], 20)["status"] == "done"


def test_node_does_not_stop_while_the_backend_serves_other_clients(stack: Stack, slow_standin: StandInServer) -> None:
    direct = threading.Thread(
        target=lambda: httpx.post(
            f"{slow_standin.url}/v1/completions", json={"prompt": "direct", "stream": True}, timeout=30
        )
    )
    stack.start_agent(slow_standin.url, **IDLE_3S)
    direct.start()
    time.sleep(3.5)
    assert stack.node_state() == "running"
    direct.join()
    wait_until(lambda: stack.node_state() == "stopped", 15, "the instance to stop after the backend went idle")


def test_dry_run_only_logs(stack: Stack, standin: StandInServer) -> None:
    agent = stack.start_agent(standin.url, **{**IDLE_3S, "TL_STOP_MODE": "dry-run"})
    wait_until(lambda: "would stop the instance" in agent.log_path.read_text(), 15, "a dry-run stop")
    assert stack.node_state() == "running"


def auto_stops(metrics_port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    counters = ("tl_auto_stops_total", "tl_backend_not_ready_stops_total")
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith(counters)}


def test_a_dry_run_stop_is_not_counted_as_a_stop(stack: Stack, standin: StandInServer) -> None:
    port = free_port()
    agent = stack.start_agent(standin.url, TL_METRICS_PORT=str(port), **{**IDLE_3S, "TL_STOP_MODE": "dry-run"})
    wait_until(lambda: "idle stop (dry run): would stop" in agent.log_path.read_text(), 15, "a dry-run stop")
    assert auto_stops(port) == {"tl_auto_stops_total": 0.0, "tl_backend_not_ready_stops_total": 0.0}


def test_a_model_server_that_never_comes_up_stops_the_node_under_its_own_name(stack: Stack) -> None:
    """Not an idle stop: its own log line and counter (tl_backend_not_ready_stops, BackendNotReadyStops), and
    AutoStops stays 0 — the dashboard tells a node that idled from one that never served."""
    port = free_port()
    nothing_there = f"http://127.0.0.1:{free_port()}"
    agent = stack.start_agent(nothing_there, wait=False, TL_METRICS_PORT=str(port), TL_STOP_MODE="stop",
                              TL_BACKEND_START_TIMEOUT_S="2")  # fmt: skip
    wait_until(lambda: stack.node_state() == "stopped", 30, "the node to stop")
    log = agent.log_path.read_text()
    assert "backend never became ready; stopping the node" in log
    assert "backend not ready stop: StopInstances called" in log and "idle stop" not in log
    wait_until(lambda: auto_stops(port).get("tl_backend_not_ready_stops_total") == 1.0, 10, "the stop counted")
    assert auto_stops(port) == {"tl_auto_stops_total": 0.0, "tl_backend_not_ready_stops_total": 1.0}
    cloudwatch = stack.cloudwatch()
    wait_until(lambda: bool(cloudwatch.list_metrics(Namespace="TLFIF", MetricName="BackendNotReadyStops")["Metrics"]),
               5, "BackendNotReadyStops to be sent")  # fmt: skip
    assert not cloudwatch.list_metrics(Namespace="TLFIF", MetricName="AutoStops")["Metrics"]
