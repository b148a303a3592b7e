"""JSON log lines on stdout (CloudWatch Logs keeps them whole; Logs Insights reads the fields)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def log(level: str, msg: str, **fields: Any) -> None:
    entry = {"ts": round(time.time(), 3), "level": level, "msg": msg, **fields}
    print(json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":")), file=sys.stdout, flush=True)
