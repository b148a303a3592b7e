"""The GPU and VRAM percentages the dashboard shows: read through NVML (a stand-in object here, as NVML needs an
NVIDIA driver and device), pushed by the agent's CloudWatch publisher to the moto server and read back."""

from __future__ import annotations

import asyncio
import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from devstack.stack import Stack
from node_agent.metrics import NAMESPACE, CloudWatchPublisher, NvmlCollector

GIB = 1024**3


class FakeNvml:
    """The four pynvml calls the collector makes, for a T4 at 37 % with 12 of 16 GiB in use."""

    def __init__(self, used: int = 12 * GIB, total: int = 16 * GIB) -> None:
        self.used, self.total = used, total

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=self.used, total=self.total)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=37)


def test_the_prometheus_gauges_per_gpu() -> None:
    registry = CollectorRegistry()
    registry.register(NvmlCollector(FakeNvml(), 1))
    text = generate_latest(registry).decode()
    assert 'tl_gpu_utilization_percent{gpu="0"} 37.0' in text
    assert 'tl_gpu_memory_total_bytes{gpu="0"} 1.7179869184e+10' in text


@pytest.mark.slow
def test_the_percentages_reach_cloudwatch(stack: Stack) -> None:
    client = stack.cloudwatch()
    with ThreadPoolExecutor(1) as executor:
        publisher = CloudWatchPublisher(client, executor)
        NvmlCollector(FakeNvml(), 1).publish(publisher)
        NvmlCollector(FakeNvml(total=0), 1).publish(publisher)  # a device reporting no memory adds no VRAM datum
        asyncio.run(publisher.flush())
    now = dt.datetime.now(dt.UTC)
    values = {}
    for name in ("GpuUtilizationPercent", "GpuMemoryUsedPercent"):
        stats = client.get_metric_statistics(
            Namespace=NAMESPACE, MetricName=name, StartTime=now - dt.timedelta(minutes=5),
            EndTime=now + dt.timedelta(minutes=5), Period=60, Statistics=["Maximum", "SampleCount"],
        )["Datapoints"]  # fmt: skip
        values[name] = (stats[0]["Maximum"], stats[0]["SampleCount"])
    assert values == {"GpuUtilizationPercent": (37.0, 2.0), "GpuMemoryUsedPercent": (75.0, 1.0)}
