"""What the moto server's CloudFormation cannot deploy, cut out of a template, and said out loud.

Every cut is listed in ``MOTO_CUTS`` with the reason; ``for_moto`` applies them and returns what it removed, so
that a test can assert the removal list is exactly the known one (a template change or a moto release that makes a
cut unnecessary shows up as a failure, not as silence)."""

from __future__ import annotations

import copy
from typing import Any

import yaml


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) kept as {"Fn::X": ...} mappings."""


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct)


def load(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(text, Loader=CfnLoader)  # noqa: S506 (SafeLoader subclass)
    return loaded


# (template, resource, property or None for the whole resource, why)
MOTO_CUTS: list[tuple[str, str, str | None, str]] = [
    ("network", "VpcIpv6", None, "moto has no Fn::GetAtt Vpc.Ipv6CidrBlocks, so no IPv6 block to hand out"),
    ("network", "PublicSubnet", "Ipv6CidrBlock", "needs Vpc.Ipv6CidrBlocks"),
    ("network", "PrivateSubnetA", "Ipv6CidrBlock", "needs Vpc.Ipv6CidrBlocks"),
    ("network", "PrivateSubnetB", "Ipv6CidrBlock", "needs Vpc.Ipv6CidrBlocks"),
    ("network", "PublicSubnet", "AssignIpv6AddressOnCreation", "no IPv6 block"),
    ("network", "PrivateSubnetA", "AssignIpv6AddressOnCreation", "no IPv6 block"),
    ("network", "PrivateSubnetB", "AssignIpv6AddressOnCreation", "no IPv6 block"),
]
MOTO_OUTPUT_CUTS: list[tuple[str, str, str]] = [
    ("network", "VpcIpv6Cidr", "needs Vpc.Ipv6CidrBlocks"),
]


def for_moto(name: str, template: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    adapted = copy.deepcopy(template)
    removed = []
    for stack, resource, prop, _why in MOTO_CUTS:
        if stack != name:
            continue
        resources = adapted["Resources"]
        if prop is None:
            if resources.pop(resource, None) is not None:
                removed.append(resource)
            for other in resources.values():
                depends = other.get("DependsOn")
                if depends == resource:
                    other.pop("DependsOn")
                elif isinstance(depends, list) and resource in depends:
                    depends.remove(resource)
        elif resources.get(resource, {}).get("Properties", {}).pop(prop, None) is not None:
            removed.append(f"{resource}.{prop}")
    for stack, output, _why in MOTO_OUTPUT_CUTS:
        if stack == name and adapted.get("Outputs", {}).pop(output, None) is not None:
            removed.append(f"Outputs.{output}")
    return adapted, removed


# moto's IAM access control (moto 5.2, moto/iam/access_control.py), found by reading it and by trying it:
# - every request's action is checked against the Allow and Deny statements of the caller's identity policies
#   (inline and attached; an explicit Deny wins);
# - the resource only for S3 (bucket and object ARNs), SQS, IAM and STS; every other service is checked against
#   "*", so a statement scoped to, say, instance ARNs matches nothing there and would refuse what AWS allows;
# - conditions are not evaluated (a statement's Condition counts as met), nor resource policies or boundaries;
# - AssumeRole checks the trust policy's AWS principals; one with only a Service principal is a server error;
# - the action is named by the service's signing name, so CloudWatch's cloudwatch:PutMetricData is asked for as
#   monitoring:PutMetricData (MOTO_ACTION_NAMES): the adapted statements grant both.
# So for the strict run the roles' statements of services moto checks "*" for are widened to "*" (their
# resources and conditions are checked by reading the templates: tests/test_stack.py, tests/test_strict_iam.py),
# and each role's trust policy also admits the operator, who assumes it for the code under test.
RESOURCE_CHECKED: tuple[str, ...] = ("s3", "sqs", "iam", "sts")
MOTO_ACTION_NAMES: dict[str, str] = {"cloudwatch": "monitoring"}


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement.get("Action", [])
    return [actions] if isinstance(actions, str) else list(actions)


def _strict_statements(statements: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The statements as moto can check them, and how many were widened."""
    out, widened = [], 0
    for original in statements:
        actions = _actions(original)
        aliases = [f"{MOTO_ACTION_NAMES[a.split(':', 1)[0]]}:{a.split(':', 1)[1]}" for a in actions
                   if a.split(":", 1)[0] in MOTO_ACTION_NAMES]  # fmt: skip
        actions += aliases
        statement = {**original, "Action": actions} if aliases else original
        checked = [a for a in actions if a.split(":", 1)[0] in RESOURCE_CHECKED]
        others = [a for a in actions if a not in checked]
        if not others or statement.get("Resource") == "*" or "NotAction" in statement:
            out.append(statement)
            continue
        widened += 1
        if checked:
            out.append({**statement, "Action": checked})
        out.append({k: v for k, v in statement.items() if k != "Condition"} | {"Action": others, "Resource": "*"})
    return out, widened


def for_strict_moto(template: dict[str, Any], operator_arn: str) -> tuple[dict[str, Any], list[str]]:
    """A (moto-adapted) template's roles as moto's IAM evaluates them, and what was changed, role by role."""
    adapted = copy.deepcopy(template)
    changes = []
    for name, resource in adapted["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        props = resource["Properties"]
        for statement in props["AssumeRolePolicyDocument"]["Statement"]:
            statement["Principal"] = {**statement.get("Principal", {}), "AWS": operator_arn}
        widened = 0
        for policy in props.get("Policies", []):
            document = policy["PolicyDocument"]
            document["Statement"], count = _strict_statements(document["Statement"])
            widened += count
        changes.append(f"{name}: trusts the operator; {widened} statement(s) widened to *")
    return adapted, changes
