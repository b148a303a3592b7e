#!/usr/bin/python
"""Ansible module: whether the account's On-Demand vCPU quota can run an instance type, and what to request if
not — before the deploy creates anything (a new account has 0 vCPUs for G instances)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ec2_vcpu_quota
short_description: Read the On-Demand vCPU quota that counts an EC2 instance type
description:
  - EC2 counts On-Demand instances in vCPUs per family group, each group one Service Quotas quota
    (EC2 User Guide, "Amazon EC2 service quotas").
  - Reads the applied value, or AWS's default where the account has none (GetServiceQuota answers
    NoSuchResourceException for a quota never changed), and the type's vCPUs from DescribeInstanceTypes.
  - Changes nothing.
options:
  instance_type:
    description: The instance type, e.g. g4dn.xlarge.
    type: str
    required: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author: tinyllama-shape
"""

EXAMPLES = r"""
- name: Can this account run the GPU shape?
  ec2_vcpu_quota:
    instance_type: g4dn.xlarge
  register: gpu_quota
"""

RETURN = r"""
quota_code:
  description: The quota's code (L-DB2E81BA for G and VT instances).
  returned: always
  type: str
quota_name:
  description: The quota's name as the Service Quotas console shows it.
  returned: always
  type: str
vcpus_needed:
  description: The instance type's default vCPUs.
  returned: always
  type: int
vcpus_allowed:
  description: The account's quota in the region.
  returned: always
  type: float
enough:
  description: Whether one instance of the type fits in the quota.
  returned: always
  type: bool
request:
  description: The AWS CLI command that requests enough.
  returned: always
  type: str
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

# A copy of lambdas/common/quotas.py's ON_DEMAND_VCPU_QUOTAS (a module cannot import the project); the tests hold
# the two to each other.
ON_DEMAND_VCPU_QUOTAS = {
    "g": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "vt": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "standard": ("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
}


def quota_for(instance_type):
    letters = "".join(c for c in instance_type.split(".", 1)[0] if c.isalpha()).lower()
    for prefix in sorted((k for k in ON_DEMAND_VCPU_QUOTAS if k != "standard"), key=len, reverse=True):
        if letters.startswith(prefix):
            return ON_DEMAND_VCPU_QUOTAS[prefix]
    return ON_DEMAND_VCPU_QUOTAS["standard"]


def main():
    module = AnsibleAWSModule(argument_spec={"instance_type": {"type": "str", "required": True}},
                              supports_check_mode=True)  # fmt: skip
    instance_type = module.params["instance_type"]
    code, name = quota_for(instance_type)
    quotas, ec2 = module.client("service-quotas"), module.client("ec2")
    try:
        described = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
        if not described:
            module.fail_json(msg=f"EC2 does not know the instance type {instance_type!r} in {ec2.meta.region_name}")
        needed = int(described[0]["VCpuInfo"]["DefaultVCpus"])
        try:
            allowed = quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
        except quotas.exceptions.NoSuchResourceException:
            allowed = quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
    except Exception as exc:  # botocore's errors, reported with their context
        module.fail_json_aws(exc, msg=f"cannot read the On-Demand quota {code} ({name}) for {instance_type}")
    region = ec2.meta.region_name
    module.exit_json(
        changed=False, quota_code=code, quota_name=name, vcpus_needed=needed, vcpus_allowed=float(allowed),
        enough=float(allowed) >= needed,
        request=(f"aws service-quotas request-service-quota-increase --region {region} --service-code ec2 "
                 f"--quota-code {code} --desired-value {needed}"),
    )  # fmt: skip


if __name__ == "__main__":
    main()
