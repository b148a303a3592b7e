"""CloudWatch metrics as Embedded Metric Format lines on stdout: no API call, no added latency.

In Lambda, CloudWatch Logs turns each line into metrics; locally the same lines can be read from the output.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Final, TextIO

NAMESPACE: Final = "TLFIF"


def emf_line(
    metrics: dict[str, float],
    *,
    namespace: str = NAMESPACE,
    unit: str = "Count",
    dimensions: dict[str, str] | None = None,
    **properties: Any,
) -> str:
    dims = dimensions or {}
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [sorted(dims)],
                    "Metrics": [{"Name": name, "Unit": unit} for name in sorted(metrics)],
                }
            ],
        },
        **dims,
        **properties,
        **metrics,
    }
    return json.dumps(document, separators=(",", ":"), default=str)


def emit(metrics: dict[str, float], *, out: TextIO | None = None, **options: Any) -> None:
    print(emf_line(metrics, **options), file=out or sys.stdout, flush=True)
