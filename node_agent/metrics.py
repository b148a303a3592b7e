"""Metrics: a Prometheus exposition on 127.0.0.1, NVML GPU gauges when a GPU is there, and the few figures
the dashboards and alarms need (AutoStops, job latency) sent to CloudWatch under the TLFIF namespace."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import MetricDatumTypeDef

log = logging.getLogger("node_agent.metrics")

NAMESPACE: Final = "TLFIF"
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
LAG_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)
LAG_PROBE_S: Final = 0.1
"""How often the event loop's lag is sampled: a sleep of this long that wakes late by the lag."""
CLOUDWATCH_VALUES_PER_DATUM: Final = 150


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter("tl_jobs", "Jobs settled, by final status.", ["status"], registry=r)
        self.attempt_failures = Counter("tl_job_attempt_failures", "Attempts that failed and were retried.", registry=r)
        self.queue_wait = Histogram(
            "tl_job_queue_wait_seconds", "Job created → claimed.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "tl_job_time_to_first_token_seconds", "Claim → first token.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.total = Histogram("tl_job_total_seconds", "Claim → reply stored.", buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("tl_jobs_in_flight", "Jobs running now.", registry=r)
        self.queue_depth = Gauge("tl_queue_depth", "Jobs queued or running, all agents.", registry=r)
        self.idle_stop_in = Gauge(
            "tl_idle_stop_seconds", "Seconds until the idle stop; -1 while the node is busy.", registry=r
        )
        self.auto_stops = Counter("tl_auto_stops", "Idle stops of the instance (StopInstances called).", registry=r)
        self.backend_stops = Counter(
            "tl_backend_not_ready_stops", "Stops because the model server never became ready.", registry=r
        )
        self.backend_up = Gauge("tl_backend_up", "1 when the model server answers.", registry=r)
        self.shape = Gauge("tl_shape", "1 for the shape this boot runs as (tl-shape).", ["shape"], registry=r)
        self.loop_lag = Histogram(
            "tl_event_loop_lag_seconds", "How late the agent's event loop wakes a timer (sampled every 0.1 s).",
            buckets=LAG_BUCKETS, registry=r,
        )  # fmt: skip
        for status in ("done", "failed", "expired"):
            self.jobs.labels(status)
        self.gpu = NvmlCollector.create()
        if self.gpu is not None:
            r.register(self.gpu)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)


class NvmlCollector(Collector):
    """GPU utilisation and memory per device, read through NVML at scrape time."""

    def __init__(self, nvml: Any, count: int) -> None:
        self._nvml = nvml
        self._count = count
        self._lock = threading.Lock()

    @classmethod
    def create(cls) -> NvmlCollector | None:
        try:
            import pynvml  # noqa: PLC0415 - optional, present only on GPU shapes

            pynvml.nvmlInit()
            count = int(pynvml.nvmlDeviceGetCount())
        except Exception as exc:  # no library, no driver or no device: each means "no GPU metrics"
            log.info("no GPU metrics", extra={"reason": f"{type(exc).__name__}: {exc}"})
            return None
        return cls(pynvml, count) if count else None

    def sample(self) -> list[tuple[float, int, int]]:
        """(utilisation %, memory used, memory total) of each GPU."""
        samples = []
        with self._lock:
            for i in range(self._count):
                handle = self._nvml.nvmlDeviceGetHandleByIndex(i)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                samples.append((float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu), memory.used, memory.total))
        return samples

    def collect(self) -> Iterator[GaugeMetricFamily]:
        util = GaugeMetricFamily("tl_gpu_utilization_percent", "GPU utilisation.", labels=["gpu"])
        used = GaugeMetricFamily("tl_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        total = GaugeMetricFamily("tl_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
        for i, (percent, in_use, size) in enumerate(self.sample()):
            util.add_metric([str(i)], percent)
            used.add_metric([str(i)], in_use)
            total.add_metric([str(i)], size)
        yield from (util, used, total)

    def publish(self, cloudwatch: CloudWatchPublisher) -> None:
        """The dashboard's GPU and VRAM percentages (the busiest GPU), into the next CloudWatch flush."""
        samples = self.sample()
        if samples:
            cloudwatch.add("GpuUtilizationPercent", max(s[0] for s in samples), "Percent")
        memory = [100.0 * used / total for _, used, total in samples if total]
        if memory:
            cloudwatch.add("GpuMemoryUsedPercent", max(memory), "Percent")


class CloudWatchPublisher:
    """Buffers datapoints and sends them with PutMetricData, off the event loop. Failures are logged, kept
    for the next flush (bounded), and never stop a job."""

    MAX_BUFFERED: Final = 10_000

    def __init__(self, client: CloudWatchClient | None, executor: Executor) -> None:
        self._client = client
        self._executor = executor
        self._values: dict[tuple[str, str], list[float]] = {}

    def add(self, name: str, value: float, unit: str) -> None:
        if self._client is None:
            return
        values = self._values.setdefault((name, unit), [])
        if len(values) < self.MAX_BUFFERED:
            values.append(value)

    async def flush(self) -> None:
        if self._client is None or not self._values:
            return
        pending, self._values = self._values, {}
        data: list[MetricDatumTypeDef] = []
        for (name, unit), values in pending.items():
            for i in range(0, len(values), CLOUDWATCH_VALUES_PER_DATUM):
                chunk = values[i : i + CLOUDWATCH_VALUES_PER_DATUM]
                data.append({"MetricName": name, "Unit": unit, "Values": chunk})  # type: ignore[typeddict-item]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._put, self._client, data)
        except (ClientError, BotoCoreError) as exc:
            log.warning("CloudWatch PutMetricData failed; keeping the data", extra={"error": str(exc)})
            for (name, unit), values in pending.items():
                for value in values:
                    self.add(name, value, unit)

    @staticmethod
    def _put(client: CloudWatchClient, data: list[MetricDatumTypeDef]) -> None:
        for i in range(0, len(data), 20):
            client.put_metric_data(Namespace=NAMESPACE, MetricData=data[i : i + 20])
