"""Can this account run an instance type at all? EC2's On-Demand quotas, and the start errors that say no.

EC2 counts On-Demand instances in vCPUs per family group, each group one Service Quotas quota ("Amazon EC2
service quotas", EC2 User Guide: On-Demand Instance quotas are managed in terms of vCPUs). A new account's quota for
G instances is 0 vCPUs, so the first ``POST /resize?target=g4dn.xlarge`` would fail at ``StartInstances``: it is
checked before the node is stopped, and answered with the quota to request.

``GetServiceQuota`` answers ``NoSuchResourceException`` for a quota the account never had changed; the default
(``GetAWSDefaultServiceQuota``) then applies (Service Quotas API reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

# Family letter(s) → (quota code, quota name), for the families the shapes use (a g5 or g6 is a G; t3 is
# Standard). The one home of the table: the aws_stack role's ec2_vcpu_quota module keeps a copy that
# tests/test_quotas.py holds to this one.
ON_DEMAND_VCPU_QUOTAS: Final[dict[str, tuple[str, str]]] = {
    "g": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "vt": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "standard": ("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
}

# StartInstances errors that no retry of the same request fixes now: no capacity for the type in the zone, or a
# quota (EC2 API reference, "Error codes": InsufficientInstanceCapacity, VcpuLimitExceeded, InstanceLimitExceeded,
# Unsupported).
REFUSALS: Final = frozenset(
    {"InsufficientInstanceCapacity", "VcpuLimitExceeded", "InstanceLimitExceeded", "Unsupported"}
)


@dataclass(frozen=True)
class Quota:
    instance_type: str
    code: str
    name: str
    vcpus_needed: int
    vcpus_allowed: float

    @property
    def enough(self) -> bool:
        return self.vcpus_allowed >= self.vcpus_needed

    def advice(self, region: str) -> str:
        return (
            f"{self.instance_type} needs {self.vcpus_needed} vCPUs of the quota {self.name!r} ({self.code}), and this "
            f"account has {self.vcpus_allowed:g} in {region}. Request an increase to at least {self.vcpus_needed}: "
            f"aws service-quotas request-service-quota-increase --region {region} --service-code ec2 "
            f"--quota-code {self.code} --desired-value {self.vcpus_needed}"
        )


def quota_for(instance_type: str) -> tuple[str, str]:
    """The quota that counts ``instance_type`` (``g4dn.xlarge`` → the G and VT quota)."""
    family = instance_type.split(".", 1)[0]
    letters = "".join(c for c in family if c.isalpha()).lower()
    for prefix in sorted((k for k in ON_DEMAND_VCPU_QUOTAS if k != "standard"), key=len, reverse=True):
        if letters.startswith(prefix):
            return ON_DEMAND_VCPU_QUOTAS[prefix]
    return ON_DEMAND_VCPU_QUOTAS["standard"]


def applied_value(quotas: Any, code: str) -> float:
    """The account's value of an EC2 quota: the applied one, else AWS's default."""
    try:
        return float(quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchResourceException":
            raise
    return float(quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])


def check(quotas: Any, ec2: Any, instance_type: str) -> Quota:
    """The quota that counts ``instance_type``, with what the type needs. Raises botocore's errors."""
    code, name = quota_for(instance_type)
    described = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"][0]
    return Quota(instance_type, code, name, int(described["VCpuInfo"]["DefaultVCpus"]), applied_value(quotas, code))


def refusal(exc: BaseException) -> str | None:
    """The reason, when ``exc`` is an EC2 error that says this type cannot start now (capacity, quota)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        if error.get("Code") in REFUSALS:
            return f"{error['Code']}: {error.get('Message', '')}".strip()
    return None


def safe_check(quotas: Any, ec2: Any, instance_type: str) -> Quota | None:
    """``check``, or None when Service Quotas cannot say (then the start itself will)."""
    try:
        return check(quotas, ec2, instance_type)
    except (ClientError, BotoCoreError, KeyError, IndexError):
        return None
