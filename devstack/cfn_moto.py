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
