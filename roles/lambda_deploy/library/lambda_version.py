#!/usr/bin/python
"""Ansible module: publish a Lambda version only when $LATEST's code or configuration differs from the newest
version's, and keep only the newest versions (never one an alias points at)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lambda_version
short_description: Publish a Lambda version when the code changed; prune old versions
description:
  - Compares the code hash and the configuration (environment, VPC, memory, timeout, role, handler, runtime,
    tracing) of C($LATEST) with the newest published version; publishes only when they differ.
  - Deletes published versions beyond the newest O(keep), except those an alias points at.
options:
  name:
    description: The function name.
    type: str
    required: true
  keep:
    description: How many published versions to keep.
    type: int
    default: 5
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author: tinyllama-shape
"""

EXAMPLES = r"""
- name: Publish when changed
  lambda_version:
    name: tl-fif-router
    keep: 5
"""

RETURN = r"""
version:
  description: The newest published version after the run.
  returned: always
  type: str
published:
  description: Whether this run published it.
  returned: always
  type: bool
deleted:
  description: Versions deleted by the pruning.
  returned: always
  type: list
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def _all(client, method, key, **kwargs):
    items = []
    for page in client.get_paginator(method).paginate(**kwargs):
        items.extend(page[key])
    return items


# What a published version freezes besides its code: a change to any of these needs a new version, or the alias
# would keep serving the old setting.
CONFIGURATION = (
    "Environment",
    "VpcConfig",
    "MemorySize",
    "Timeout",
    "Role",
    "Handler",
    "Runtime",
    "TracingConfig",
    "Architectures",
)


def _configuration(config):
    frozen = {key: config.get(key) for key in CONFIGURATION}
    vpc = dict(frozen["VpcConfig"] or {})
    vpc.pop("VpcId", None)
    frozen["VpcConfig"] = {k: sorted(v) if isinstance(v, list) else v for k, v in vpc.items() if v not in ([], None)}
    return frozen


def main():
    module = AnsibleAWSModule(
        argument_spec={"name": {"type": "str", "required": True}, "keep": {"type": "int", "default": 5}},
        supports_check_mode=True,
    )
    name, keep = module.params["name"], module.params["keep"]
    if keep < 1:
        module.fail_json(msg=f"keep must be at least 1, got {keep}")
    client = module.client("lambda")
    try:
        client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        latest = client.get_function_configuration(FunctionName=name)
        versions = [
            v
            for v in _all(client, "list_versions_by_function", "Versions", FunctionName=name)
            if v["Version"] != "$LATEST"
        ]
        versions.sort(key=lambda v: int(v["Version"]))
        published = False
        if (
            not versions
            or versions[-1]["CodeSha256"] != latest["CodeSha256"]
            or _configuration(versions[-1]) != _configuration(latest)
        ):
            published = True
            if not module.check_mode:
                made = client.publish_version(FunctionName=name, CodeSha256=latest["CodeSha256"])
                versions.append(made)
        aliased = {a["FunctionVersion"] for a in _all(client, "list_aliases", "Aliases", FunctionName=name)}
        deleted = []
        for old in versions[:-keep]:
            if old["Version"] in aliased:
                continue
            deleted.append(old["Version"])
            if not module.check_mode:
                client.delete_function(FunctionName=name, Qualifier=old["Version"])
    except Exception as exc:  # botocore's errors, reported with their context
        module.fail_json_aws(exc, msg=f"cannot version {name}")
    module.exit_json(
        changed=published or bool(deleted),
        version=versions[-1]["Version"] if versions else None,
        published=published,
        deleted=deleted,
    )


if __name__ == "__main__":
    main()
