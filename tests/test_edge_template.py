"""The edge template (API Gateway v2), which the local AWS's CloudFormation cannot deploy, held to what AWS would
check and to the product's own tables: the route table (``lambdas/routes.py``), the JWT authorizer, the
integrations, the stage's access log, and the functions' invoke permissions. The local edge runs the router with
the same route table; what this cannot check (a deploy on AWS) is listed in docs/aws.md."""

from __future__ import annotations

import json
import re
from typing import Any

from devstack.cfn_moto import load
from devstack.deploy import TEMPLATES
from lambdas.routes import ROUTES

EDGE = load((TEMPLATES / "edge.yml").read_text())
RESOURCES = EDGE["Resources"]
INTEGRATIONS = {"router": "RouterIntegration", "shape_control": "ShapeControlIntegration",
                "queue_health": "QueueHealthIntegration"}  # fmt: skip
# The $context variables HTTP APIs log (API Gateway developer guide, "Customizing HTTP API access logs"); a
# REST-only one (such as $context.resourcePath) would log "-" for ever.
HTTP_API_LOG_VARIABLES = {
    "requestId", "extendedRequestId", "identity.sourceIp", "routeKey", "status", "responseLatency",
    "integrationLatency", "authorizer.error", "requestTime", "httpMethod", "path", "protocol", "responseLength",
    "integrationErrorMessage", "error.message",
}  # fmt: skip


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == kind}


def test_the_api_has_exactly_the_routes_of_the_route_table_each_with_its_auth_and_function() -> None:
    declared = {r["Properties"]["RouteKey"]: r["Properties"] for r in of_type("AWS::ApiGatewayV2::Route").values()}
    assert set(declared) == {route.key for route in ROUTES}
    for route in ROUTES:
        props = declared[route.key]
        assert props["Target"] == {"Fn::Sub": f"integrations/${{{INTEGRATIONS[route.function]}}}"}, route.key
        if route.auth:
            assert (props["AuthorizationType"], props["AuthorizerId"]) == ("JWT", {"Ref": "JwtAuthorizer"}), route.key
        else:
            assert props["AuthorizationType"] == "NONE" and "AuthorizerId" not in props, route.key


def test_the_authorizer_checks_the_pools_id_tokens_for_the_cli_client() -> None:
    (authorizer,) = of_type("AWS::ApiGatewayV2::Authorizer").values()
    props = authorizer["Properties"]
    assert props["AuthorizerType"] == "JWT"
    assert props["IdentitySource"] == ["$request.header.Authorization"]
    assert props["JwtConfiguration"] == {
        "Audience": [{"Ref": "ClientId"}],
        "Issuer": {"Fn::Sub": "https://cognito-idp.${AWS::Region}.amazonaws.com/${UserPoolId}"},
    }


def test_each_integration_is_a_v2_proxy_within_http_apis_30_s_and_may_invoke_its_function() -> None:
    integrations = of_type("AWS::ApiGatewayV2::Integration")
    assert set(integrations) == set(INTEGRATIONS.values())
    permissions = {p["Properties"]["FunctionName"]["Ref"]: p["Properties"]
                   for p in of_type("AWS::Lambda::Permission").values()}  # fmt: skip
    for integration in integrations.values():
        props = integration["Properties"]
        assert (props["IntegrationType"], props["PayloadFormatVersion"]) == ("AWS_PROXY", "2.0")
        # HTTP APIs: TimeoutInMillis 50 to 30,000 (API Gateway quotas, "HTTP API quotas": integration timeout)
        assert 50 <= props["TimeoutInMillis"] <= 30_000
        function = props["IntegrationUri"]["Ref"]
        assert permissions[function]["Principal"] == "apigateway.amazonaws.com"
        assert permissions[function]["Action"] == "lambda:InvokeFunction"
        assert "execute-api" in permissions[function]["SourceArn"]["Fn::Sub"]


def test_the_stages_access_log_is_json_with_a_request_id_and_only_http_api_variables() -> None:
    (stage,) = of_type("AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["AccessLogs", "Arn"]}
    line = settings["Format"]
    # "The access log format must include at least $context.requestId or $context.extendedRequestId"
    assert "$context.requestId" in line or "$context.extendedRequestId" in line
    used = set(re.findall(r"\$context\.([A-Za-z.]+)", line))
    claims = {v for v in used if v.startswith("authorizer.claims.")}
    assert used - claims <= HTTP_API_LOG_VARIABLES, used - claims - HTTP_API_LOG_VARIABLES
    # one JSON object per request, whatever the values (numbers unquoted, strings quoted)
    sample = re.sub(r'"\$context\.[A-Za-z.]+"', '"x"', line)
    sample = re.sub(r"\$context\.[A-Za-z.]+", "1", sample)
    assert isinstance(json.loads(sample), dict)
    assert stage["Properties"]["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0
    assert RESOURCES["AccessLogs"]["Properties"]["RetentionInDays"] > 0
