"""openapi.yaml against the handlers: the same routes, the same request schema, and every answer the handlers
give — in a walk through each route and in a property-based fuzz of /infer — documented and valid."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.stack import BUCKET, Stack
from jobqueue import contract
from lambdas import routes
from lambdas.common.auth import JwksCache, Verifier
from lambdas.common.settings import Settings
from lambdas.queue_health import handler as queue_health
from lambdas.router.app import Router
from lambdas.router.schema import INFER_SCHEMA
from lambdas.shape_control.app import ShapeControl
from tests.support import AUDIENCE, ISSUER, JwksServer, SigningKey, setenv, v2_event

SPEC = yaml.safe_load((Path(__file__).resolve().parent.parent / "openapi.yaml").read_text())


def response_validator(method: str, path: str, status: int) -> Callable[[Any], Any]:
    operation = SPEC["paths"][path][method.lower()]
    documented = operation["responses"]
    assert str(status) in documented, f"{method} {path} answered {status}, which openapi.yaml does not document"
    response = documented[str(status)]
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    schema = {**response["content"]["application/json"]["schema"], "components": SPEC["components"]}
    return fastjsonschema.compile(schema, formats={"uuid": contract.UUID4_RE.pattern})


def check(method: str, path: str, response: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(response["body"])
    response_validator(method, path, response["statusCode"])(body)
    return dict(body)


def test_the_spec_has_exactly_the_routes_of_the_route_table() -> None:
    documented = {(m.upper(), p) for p, ops in SPEC["paths"].items() for m in ops}
    assert documented == {(r.method, r.path) for r in routes.ROUTES}
    open_routes = {
        (m.upper(), p) for p, ops in SPEC["paths"].items() for m, op in ops.items() if op.get("security") == []
    }
    assert open_routes == {(r.method, r.path) for r in routes.ROUTES if not r.auth}


def test_the_infer_body_schema_is_the_handlers_schema() -> None:
    documented = SPEC["components"]["schemas"]["InferRequest"]
    # exactly one input: documented as oneOf; the handler's check is contract.check_input (tests/test_router.py)
    assert documented["oneOf"] == [{"required": ["prompt"]}, {"required": ["messages"]}]
    assert "required" not in documented and "required" not in INFER_SCHEMA
    assert documented["additionalProperties"] is INFER_SCHEMA["additionalProperties"]
    strip = {k: {kk: vv for kk, vv in v.items() if kk != "description"} for k, v in documented["properties"].items()}
    assert strip == INFER_SCHEMA["properties"]


def test_every_kind_of_reply_the_contract_builds_is_the_documented_reply() -> None:
    validate = fastjsonschema.compile({**SPEC["components"]["schemas"]["Reply"], "components": SPEC["components"]})

    def done(job_id: str, chat: bool) -> dict[str, Any]:
        return contract.build_reply(
            job_id, "done", owner="u", output="Blue.", model="m", usage={"completion_tokens": 2},
            finish_reason="stop", chat=chat, attempts=1, created_at=1.0, claimed_at=2.0, ttft_s=0.1,
            started_at=2.0, finished_at=3.0, shape="gpu",
        )  # fmt: skip

    replies = [
        done("a", chat=True),
        done("b", chat=False),
        contract.build_reply("c", "failed", error="backend unreachable", finished_at=3.0),
        contract.build_reply("d", "expired", owner="u", error="expired", finished_at=3.0),
    ]
    for reply in replies:
        validate(reply)
    assert replies[0]["message"] == {"role": "assistant", "content": "Blue."} and "message" not in replies[1]
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate({**replies[0], "message": {"role": "user", "content": "x"}})


@pytest.fixture(scope="module")
def world(shared_stack: Stack, signing_key: SigningKey) -> Iterator[dict[str, Any]]:
    shared_stack.reset()
    jwks = JwksServer([signing_key]).start()
    env = {
        "TL_REDIS_URL": shared_stack.redis.url,
        "TL_JWKS_URL": jwks.url,
        "TL_JWT_ISSUER": ISSUER,
        "TL_JWT_AUDIENCE": AUDIENCE,
        "TL_REPLY_BUCKET": BUCKET,
        **shared_stack.moto.aws_env(),
    }
    with pytest.MonkeyPatch.context() as mp:
        setenv(mp, env)
        router = Router.from_env()
        shape = ShapeControl(Settings.from_env(), shared_stack.ec2(), Verifier(JwksCache(jwks.url), ISSUER, AUDIENCE),
                             lambda job: None)  # fmt: skip
        queue_health.reset()
        yield {"router": router, "shape": shape, "stack": shared_stack, "key": signing_key}
        queue_health.reset()
    jwks.stop()


@pytest.mark.slow
def test_a_walk_through_every_route_gives_only_documented_answers(world: dict[str, Any]) -> None:
    router, shape, stack, key = world["router"], world["shape"], world["stack"], world["key"]
    token = key.token(sub="walker")
    admin = key.token(sub="boss", **{"cognito:groups": ["admin"]})
    stack.beat()
    seen: set[tuple[str, int]] = set()

    def call(method: str, path: str, handler: Callable[[dict[str, Any]], dict[str, Any]], **kw: Any) -> dict[str, Any]:
        response = handler(v2_event(method, path, **kw))
        spec_path = "/result/{id}" if path.startswith("/result/") else path
        body = check(method, spec_path, response)
        seen.add((f"{method} {spec_path}", response["statusCode"]))
        return body

    handle = router.handle
    call("GET", "/ping", handle)
    job = call("POST", "/infer", handle, body='{"prompt": "hi"}', token=token)
    call("POST", "/infer", handle, body='{"prompt": 1}', token=token)
    call("POST", "/infer", handle, body="x" * 20_000, token=token)
    call("POST", "/infer", handle, body='{"prompt": "hi"}')
    call("POST", "/infer", handle, body='{"prompt": "hi"}', token="bad")
    for _ in range(5):
        call("POST", "/infer", handle, body='{"prompt": "hi"}', token=token)
    call("GET", f"/result/{job['id']}", handle, token=token)
    call("GET", f"/result/{uuid.uuid4()}", handle, token=token)
    assert call("GET", "/status", handle, token=token)["node"] == "ready"
    call("GET", "/status", handle)
    call("POST", "/stop", handle, token=token)
    call("POST", "/stop", handle, token=token)
    assert call("GET", "/status", handle, token=token)["node"] == "asleep"
    call("POST", "/resize", shape.handle, token=token, query={"target": "g4dn.xlarge"})
    call("POST", "/resize", shape.handle, token=admin, query={"target": "x"})
    call("POST", "/resize", shape.handle, token=admin, query={"target": "t3.small"})
    call("POST", "/resize", shape.handle, token=admin, query={"target": "g4dn.xlarge"})
    call("POST", "/resize", shape.handle, token=admin, query={"target": "g4dn.xlarge"})
    call("GET", "/queue-health", lambda e: queue_health.handler(e, None))
    stack.redis.stop()
    call("POST", "/infer", handle, body='{"prompt": "hi"}', token=key.token(sub="other"))  # parked: 202
    stack.ec2().create_tags(Resources=[stack.instance_id], Tags=[{"Key": "tl-hold", "Value": "walk"}])
    call("POST", "/infer", handle, body='{"prompt": "hi"}', token=key.token(sub="other"))  # held: 503
    assert call("GET", "/status", handle, token=token)["node"] == "held"
    stack.ec2().start_instances(InstanceIds=[stack.instance_id])  # a running node whose Redis is away: 503
    call("GET", "/queue-health", lambda e: queue_health.handler(e, None))
    stack.redis.start()
    expected = {("POST /infer", s) for s in (202, 400, 401, 403, 413, 429, 503)}
    assert expected <= seen
    assert {("POST /resize", s) for s in (200, 202, 400, 403, 409)} <= seen
    assert {("GET /queue-health", 200), ("GET /queue-health", 503), ("POST /stop", 202), ("POST /stop", 200)} <= seen
    assert {("GET /status", 200), ("GET /status", 401)} <= seen


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
FIELDS = st.sampled_from(["prompt", "messages", "idle_minutes", "max_tokens", "temperature", "top_p", "stop", "seed",
                          "model", "", "PROMPT"])  # fmt: skip
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", ""]), "content": st.text(max_size=300)},
        optional={"name": st.text(max_size=5)},
    )
    | JSON_VALUES,
    max_size=5,
)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    st.dictionaries(FIELDS, JSON_VALUES, max_size=5).map(json.dumps),
    st.fixed_dictionaries(
        {"prompt": st.text(min_size=0, max_size=3000)},
        optional={
            "idle_minutes": st.integers(-5, 40),
            "max_tokens": st.integers(-1, 5000),
            "temperature": st.floats(-1, 3, allow_nan=False),
        },
    ).map(json.dumps),
    st.fixed_dictionaries(
        {"messages": MESSAGES},
        optional={
            "prompt": st.text(max_size=20),
            "top_p": st.floats(-1, 2, allow_nan=False),
            "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6),
            "seed": st.integers(-2, 2**33),
        },
    ).map(json.dumps),
)
AUTH = st.sampled_from(["valid", "none", "garbage", "empty", "expired", "bearer-only"])
OTHER_HEADERS = st.dictionaries(
    st.sampled_from(["content-type", "x-forwarded-for", "origin", "content-encoding"]), st.text(max_size=30), max_size=3
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, auth=AUTH, headers=OTHER_HEADERS, serving=st.booleans())
def test_fuzzed_infer_requests_never_get_an_undocumented_answer_or_a_5xx_but_503(
    world: dict[str, Any], body: str | bytes, auth: str, headers: dict[str, str], serving: bool
) -> None:
    router, stack, key = world["router"], world["stack"], world["key"]
    stack.beat("ready" if serving else None)
    token = {"valid": key.token(), "garbage": "x.y.z", "empty": "", "expired": key.token(exp=1),
             "bearer-only": ""}.get(auth)  # fmt: skip
    event = v2_event("POST", "/infer", body=body, headers=headers)
    if auth == "bearer-only":
        event["headers"]["authorization"] = "Bearer "
    elif token is not None:
        event["headers"]["authorization"] = f"Bearer {token}"
    response = router.handle(event)
    status = response["statusCode"]
    assert status < 500 or status == 503, response
    check("POST", "/infer", response)
    stack.redis.client().delete(contract.QUEUE_STREAM)  # keep the queue from filling up over the examples
