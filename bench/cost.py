"""Cost benchmark (not a test): the default deployment's monthly cost at rest and the price of a running hour.

    python bench/cost.py

Computed from the CloudFormation templates and roles/aws_stack/files/prices.yml (devstack/costs.py). Last line:
one JSON object with idle_eur_month, gpu_eur_hour and builder_eur_hour.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack import costs

TARGET_EUR_MONTH = 2.6


def main() -> int:
    computed = costs.at_rest()
    rate = computed.usd_eur
    print(computed.table())
    if computed.unpriced:
        print("not priced:", ", ".join(computed.unpriced))
    figures = {
        "idle_eur_month": round(computed.eur, 2),
        "idle_eur_month_without_free_tier": round(computed.list_usd * rate, 2),
        "gpu_eur_hour": round(costs.hourly_usd("g4dn.xlarge") * rate, 3),
        "builder_eur_hour": round(costs.hourly_usd("t3.small") * rate, 4),
        "target_eur_month": TARGET_EUR_MONTH,
    }
    figures["target_met"] = figures["idle_eur_month"] <= TARGET_EUR_MONTH
    gpu, builder = figures["gpu_eur_hour"], figures["builder_eur_hour"]
    print(f"idle: €{figures['idle_eur_month']:.2f} a month (target ≤ €{TARGET_EUR_MONTH}); "
          f"GPU €{gpu:.3f} an hour, builder €{builder:.4f} an hour")  # fmt: skip
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
