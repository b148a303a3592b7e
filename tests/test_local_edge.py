"""The local edge (``python -m lambdas.local_api``) and the ``tl`` CLI, over moto's Cognito and the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.authserver import AuthServer
from devstack.edge import LocalEdgeServer, UserPool
from devstack.edge import tl_env as edge_tl_env
from devstack.procs import free_port, venv_tool, wait_until
from devstack.stack import Stack, StandInServer
from tests.support import PASSWORD
from tlcli.tokens import LoginError, challenge_of, claims_unverified, hosted_ui_login, password_login

pytestmark = pytest.mark.slow


def token_of(pool: UserPool, stack: Stack, user: str) -> str:
    os.environ.update({k: v for k, v in stack.moto.aws_env().items() if k == "AWS_ENDPOINT_URL"})
    return password_login(pool.client_id, user, PASSWORD, region="eu-central-1").id_token


def access_log(edge: LocalEdgeServer) -> list[dict[str, Any]]:
    lines = edge.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"requestId"')]


def test_ping_answers_and_every_request_is_logged(edge: LocalEdgeServer) -> None:
    response = httpx.get(f"{edge.url}/ping")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    request_id = response.headers["apigw-requestid"]
    wait_until(lambda: any(e["requestId"] == request_id for e in access_log(edge)), 5, "access log line")
    (entry,) = [e for e in access_log(edge) if e["requestId"] == request_id]
    assert set(entry) == {"requestId", "ip", "route", "status", "latencyMs"}
    assert (entry["ip"], entry["route"], entry["status"]) == ("127.0.0.1", "GET /ping", 200)


def test_the_edge_answers_401_and_403_like_the_router(
    edge: LocalEdgeServer, pool: UserPool, shared_stack: Stack
) -> None:
    none = httpx.post(f"{edge.url}/infer", json={"prompt": "x"})
    bad = httpx.post(f"{edge.url}/infer", json={"prompt": "x"}, headers={"authorization": "Bearer x.y.z"})
    good = token_of(pool, shared_stack, "ann")
    forged = good[:-8] + ("A" * 8 if not good.endswith("A" * 8) else "B" * 8)
    tampered = httpx.post(f"{edge.url}/infer", json={"prompt": "x"}, headers={"authorization": f"Bearer {forged}"})
    assert (none.status_code, bad.status_code, tampered.status_code) == (401, 403, 403)
    assert none.json()["message"] == "missing bearer token in the Authorization header"


def test_cors_allows_localhost_only(edge: LocalEdgeServer) -> None:
    ask = {"access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type"}
    ok = httpx.options(f"{edge.url}/infer", headers={"origin": "http://localhost:5173", **ask})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"]
    for origin in ("https://evil.example", "http://127.0.0.1:5173", "http://localhost.evil.example", "null"):
        refused = httpx.options(f"{edge.url}/infer", headers={"origin": origin, **ask})
        assert refused.status_code == 403, origin
        assert "access-control-allow-origin" not in refused.headers
    simple = httpx.get(f"{edge.url}/ping", headers={"origin": "http://localhost"})
    assert simple.headers["access-control-allow-origin"] == "http://localhost"
    assert (
        "access-control-allow-origin" not in httpx.get(f"{edge.url}/ping", headers={"origin": "https://x.io"}).headers
    )


def test_unknown_routes_are_404(edge: LocalEdgeServer) -> None:
    assert httpx.get(f"{edge.url}/infer").status_code == 404
    assert httpx.get(f"{edge.url}/nothing").status_code == 404


def test_admins_resize_through_the_edge(edge: LocalEdgeServer, pool: UserPool, shared_stack: Stack) -> None:
    url = f"{edge.url}/resize?target=g4dn.xlarge"
    user = httpx.post(url, headers={"authorization": f"Bearer {token_of(pool, shared_stack, 'cat')}"})
    assert user.status_code == 403
    dan = {"authorization": f"Bearer {token_of(pool, shared_stack, 'dan')}"}
    # a new account has no G quota (the local AWS's Service Quotas stand-in): refused before the node stops
    refused = httpx.post(url, headers=dan, timeout=60)
    assert (refused.status_code, refused.json()["status"], refused.json()["quota"]) == (409, "quota", "L-DB2E81BA")
    shared_stack.moto.quotas.applied["L-DB2E81BA"] = 4
    admin = httpx.post(url, headers=dan, timeout=60)
    assert (admin.status_code, admin.json()["status"]) == (200, "resized")
    shared_stack.ec2().modify_instance_attribute(
        InstanceId=shared_stack.instance_id, InstanceType={"Value": "t3.small"}
    )


def tl(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("tl"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def tl_env(shared_stack: Stack, pool: UserPool, edge: LocalEdgeServer, tmp_path: Path) -> dict[str, str]:
    return edge_tl_env(shared_stack, edge.url, pool, tmp_path / "token.json")


def test_tl_without_login_says_how_to_log_in(tl_env: dict[str, str]) -> None:
    done = tl(["infer", "hello"], tl_env)
    assert done.returncode == 2
    assert "run `tl login`" in done.stderr


def test_tl_token_prints_the_saved_token_for_scripts(tl_env: dict[str, str], edge: LocalEdgeServer) -> None:
    assert tl(["token"], tl_env).returncode == 2  # not logged in: the same advice as every command
    assert tl(["login", "--password", "--username", "ben"], {**tl_env, "TL_PASSWORD": PASSWORD}).returncode == 0
    token = tl(["token"], tl_env).stdout.strip()
    assert token.count(".") == 2
    unknown = "00000000-0000-4000-8000-000000000000"
    answer = httpx.get(f"{edge.url}/result/{unknown}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == httpx.codes.NOT_FOUND, answer.text  # authenticated as printed: no such job of ben's


def test_tl_login_with_a_wrong_password_is_refused(tl_env: dict[str, str]) -> None:
    done = tl(["login", "--password", "--username", "ann"], {**tl_env, "TL_PASSWORD": "wrong-Pass-1!"})
    assert done.returncode == 2 and "Cognito refused the login" in done.stderr
    assert not Path(tl_env["TL_TOKEN_FILE"]).exists()


def test_tl_starts_the_node_follows_the_text_and_prints_the_reply(
    tl_env: dict[str, str], shared_stack: Stack, standin: StandInServer
) -> None:
    login = tl(["login", "--password", "--username", "ben"], {**tl_env, "TL_PASSWORD": PASSWORD})
    assert login.returncode == 0, login.stderr
    assert oct(Path(tl_env["TL_TOKEN_FILE"]).stat().st_mode & 0o777) == "0o600"
    shared_stack.ec2().stop_instances(InstanceIds=[shared_stack.instance_id])
    shared_stack.redis.client().delete("tl:heartbeat")
    run = subprocess.Popen([venv_tool("tl"), "infer", "Say something", "--max-tokens", "16", "--poll", "0.2"],
                           env=tl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    # the cold boot, in moto
    wait_until(lambda: shared_stack.node_state() == "running", 30, "the router to start the node")
    agent = shared_stack.start_agent(standin.url)  # ... and the node's agent comes up
    out, err = run.communicate(timeout=60)
    agent.stop()
    assert run.returncode == 0, err
    assert "starting the node" in err and "running" in err and "done:" in err
    assert out.strip(), "the reply text is printed"


def test_tl_ping(tl_env: dict[str, str]) -> None:
    done = tl(["ping"], tl_env)
    assert done.returncode == 0 and json.loads(done.stdout) == {"status": "ok"}


def test_hosted_ui_login_uses_pkce_and_checks_state(pool: UserPool, shared_stack: Stack) -> None:
    """``tl login`` against the stand-in hosted UI (moto has none), which hands out the pool's real tokens."""
    port = free_port()
    callback = f"http://localhost:{port}/callback"

    def sign_in(url: str) -> None:  # the user's browser: the form, filled in and sent
        split = urllib.parse.urlsplit(url)
        login = f"{split.scheme}://{split.netloc}/login?{split.query}"
        httpx.post(login, data={"username": "ann", "password": PASSWORD}, follow_redirects=True, timeout=10)

    with AuthServer(shared_stack, pool, callbacks=[callback]) as ui:
        tokens = hosted_ui_login(ui.url, pool.client_id, open_browser=sign_in, port=port, timeout_s=10)
        assert tokens.client_id == pool.client_id and tokens.refresh_token  # kept to renew the session
        assert claims_unverified(tokens.id_token)["cognito:username"] == "ann"

        def forged_state(url: str) -> None:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
            httpx.get(f"{query['redirect_uri']}?code=abc&state=forged")

        with pytest.raises(LoginError, match="state does not match"):
            hosted_ui_login(ui.url, pool.client_id, open_browser=forged_state, port=port, timeout_s=10)


def test_the_stand_in_hosted_ui_refuses_what_cognito_refuses(pool: UserPool, shared_stack: Stack) -> None:
    callback = "http://localhost:8765/callback"
    verifier = "v" * 50
    query = {"response_type": "code", "client_id": pool.client_id, "redirect_uri": callback, "state": "s",
             "code_challenge": challenge_of(verifier), "code_challenge_method": "S256"}  # fmt: skip
    with AuthServer(shared_stack, pool, callbacks=[callback]) as ui:
        authorize = f"{ui.url}/oauth2/authorize"
        assert httpx.get(authorize, params={**query, "redirect_uri": "http://evil.example/cb"}).status_code == 400
        assert httpx.get(authorize, params={**query, "code_challenge_method": "plain"}).status_code == 400
        assert httpx.get(authorize, params={**query, "client_id": "other"}).status_code == 400
        token = f"{ui.url}/oauth2/token"

        def code() -> str:
            signed = httpx.post(f"{ui.url}/login", params=query, data={"username": "ann", "password": PASSWORD})
            return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(signed.headers["location"]).query))["code"]

        form = {"grant_type": "authorization_code", "client_id": pool.client_id, "redirect_uri": callback}
        assert httpx.post(token, data={**form, "code": code(), "code_verifier": "wrong" * 10}).status_code == 400
        good = {**form, "code": code(), "code_verifier": verifier}
        assert "id_token" in httpx.post(token, data=good).json()
        assert httpx.post(token, data=good).json() == {"error": "invalid_grant"}  # a code is good once


def test_pkce_challenge_matches_rfc_7636() -> None:
    # RFC 7636, appendix B
    assert challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
