"""The On-Demand vCPU quotas: which quota counts a type, the one table and its copy, and the Service Quotas stand-in
speaking the API's wire format to boto3's real client."""

from __future__ import annotations

import ast

import pytest
from botocore.exceptions import ClientError

from devstack.procs import REPO
from devstack.quotas import NEW_ACCOUNT, QuotaServer
from lambdas.common import quotas

MODULE = REPO / "roles" / "aws_stack" / "library" / "ec2_vcpu_quota.py"


@pytest.mark.parametrize(
    ("instance_type", "code"),
    [("g4dn.xlarge", "L-DB2E81BA"), ("g5.xlarge", "L-DB2E81BA"), ("g6e.2xlarge", "L-DB2E81BA"),
     ("vt1.3xlarge", "L-DB2E81BA"), ("t3.small", "L-1216C47A"), ("m7i.large", "L-1216C47A")],
)  # fmt: skip
def test_each_type_is_counted_by_its_familys_quota(instance_type: str, code: str) -> None:
    assert quotas.quota_for(instance_type)[0] == code


def test_the_roles_module_keeps_the_same_table() -> None:
    tree = ast.parse(MODULE.read_text())
    copy = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", "") == "ON_DEMAND_VCPU_QUOTAS" for t in node.targets))  # fmt: skip
    assert copy == dict(quotas.ON_DEMAND_VCPU_QUOTAS)


def test_the_stand_in_answers_as_service_quotas_does() -> None:
    with QuotaServer(defaults=NEW_ACCOUNT) as server:
        sq = server.client()
        with pytest.raises(sq.exceptions.NoSuchResourceException):  # a quota the account never had changed
            sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-DB2E81BA")
        assert quotas.applied_value(sq, "L-DB2E81BA") == 0
        server.applied["L-DB2E81BA"] = 8
        assert quotas.applied_value(sq, "L-DB2E81BA") == 8
        with pytest.raises(ClientError, match="UnknownOperation"):
            sq.list_services()
        server.reset()
        assert quotas.applied_value(sq, "L-DB2E81BA") == 0


def test_a_refusal_is_told_from_other_errors() -> None:
    capacity = ClientError(
        {"Error": {"Code": "InsufficientInstanceCapacity", "Message": "none left"}}, "StartInstances"
    )
    assert quotas.refusal(capacity) == "InsufficientInstanceCapacity: none left"
    assert quotas.refusal(ClientError({"Error": {"Code": "InternalError"}}, "StartInstances")) is None
    assert quotas.refusal(ValueError("x")) is None
    advice = quotas.Quota("g4dn.xlarge", "L-DB2E81BA", "Running On-Demand G and VT instances", 4, 0).advice("eu-west-1")
    assert "needs 4 vCPUs" in advice and "--region eu-west-1" in advice and "--desired-value 4" in advice
