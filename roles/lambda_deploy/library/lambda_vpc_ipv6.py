#!/usr/bin/python
"""Ansible module: let a VPC function send IPv6 traffic from dual-stack subnets (``Ipv6AllowedForDualStack``), which
``amazon.aws.lambda`` has no option for."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lambda_vpc_ipv6
short_description: Set Ipv6AllowedForDualStack on a Lambda function's VPC configuration
description:
  - A function in a dual-stack subnet sends no IPv6 traffic unless its VpcConfig allows it; without a NAT gateway
    that is its only way out of the VPC (AWS Lambda, VpcConfig, Ipv6AllowedForDualStack).
  - Changes nothing on a function that is not in a VPC.
options:
  name:
    description: The function name.
    type: str
    required: true
  allowed:
    description: Whether outbound IPv6 is allowed.
    type: bool
    default: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author: tinyllama-shape
"""

EXAMPLES = r"""
- name: Outbound IPv6 for the router
  lambda_vpc_ipv6:
    name: tl-fif-router
"""

RETURN = r"""
vpc_config:
  description: The function's VPC configuration after the run.
  returned: always
  type: dict
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def main():
    module = AnsibleAWSModule(
        argument_spec={"name": {"type": "str", "required": True}, "allowed": {"type": "bool", "default": True}},
        supports_check_mode=True,
    )
    name, allowed = module.params["name"], module.params["allowed"]
    client = module.client("lambda")
    waiter = {"FunctionName": name, "WaiterConfig": {"Delay": 2, "MaxAttempts": 60}}
    try:
        client.get_waiter("function_updated_v2").wait(**waiter)
        vpc = client.get_function_configuration(FunctionName=name).get("VpcConfig") or {}
        if not vpc.get("SubnetIds") or bool(vpc.get("Ipv6AllowedForDualStack")) == allowed:
            module.exit_json(changed=False, vpc_config=vpc)
        if not module.check_mode:
            wanted = {
                "SubnetIds": vpc["SubnetIds"],
                "SecurityGroupIds": vpc.get("SecurityGroupIds", []),
                "Ipv6AllowedForDualStack": allowed,
            }
            vpc = client.update_function_configuration(FunctionName=name, VpcConfig=wanted).get("VpcConfig") or {}
            client.get_waiter("function_updated_v2").wait(**waiter)
    except Exception as exc:  # botocore's errors, reported with their context
        module.fail_json_aws(exc, msg=f"cannot set Ipv6AllowedForDualStack on {name}")
    module.exit_json(changed=True, vpc_config=vpc)


if __name__ == "__main__":
    main()
