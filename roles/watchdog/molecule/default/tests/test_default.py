"""watchdog, checked on the running container: the timer is armed, and a dead agent gets the node stopped."""

import os
import sys
import time

sys.path.insert(0, os.environ["TL_REPO_ROOT"])
from tests.support import container_check  # the scripts run inside the container (molecule/checks)

STATE = container_check("instance_state")


def node_state(host):
    return host.run("/opt/moto/bin/python -c %s", STATE).stdout.strip()


def test_the_timer_is_armed(host):
    assert host.service("tl-watchdog.timer").is_enabled
    assert host.service("tl-watchdog.timer").is_running


def test_a_live_agent_keeps_the_node_running(host):
    assert host.run("systemctl start tl-watchdog.service").rc == 0
    assert node_state(host) == "running"


def test_a_dead_agent_gets_the_node_stopped(host):
    host.run("supervisorctl stop tl-node-agent")
    host.run("redis-cli del tl:heartbeat")
    host.run("systemctl start tl-watchdog.service")  # starts the stale clock
    assert node_state(host) == "running"
    time.sleep(6)
    host.run("systemctl start tl-watchdog.service")
    assert node_state(host) in ("stopping", "stopped")
    assert "StopInstances called" in host.run("journalctl -u tl-watchdog.service --no-pager").stdout
