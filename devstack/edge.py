"""The user-facing half of the local stack: a Cognito user pool in moto and the local HTTP edge."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from devstack.procs import Process, clean_env, free_port, http_ok, pythonpath
from devstack.servers import AWS_REGION
from devstack.stack import Stack

if TYPE_CHECKING:
    from mypy_boto3_cognito_idp import CognitoIdentityProviderClient

DEMO_USER: Final = "demo"
DEMO_PASSWORD: Final = "Demo-password-1!"  # noqa: S105 (a throw-away user of the local stack)


@dataclass(frozen=True)
class UserPool:
    pool_id: str
    client_id: str
    jwks_url: str

    @property
    def issuer(self) -> str:
        """What moto writes into ``iss``: the real AWS host (its keys are served by moto itself)."""
        return f"https://cognito-idp.{AWS_REGION}.amazonaws.com/{self.pool_id}"


def create_user_pool(stack: Stack, name: str = "tinyllama-shape") -> UserPool:
    """A pool with an ``admin`` group and an app client that allows USER_PASSWORD_AUTH, as the edge stack has."""
    cognito: CognitoIdentityProviderClient = stack.moto.client("cognito-idp")
    pool = cognito.create_user_pool(PoolName=name)["UserPool"]["Id"]
    client = cognito.create_user_pool_client(
        UserPoolId=pool,
        ClientName="tl-cli",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        AllowedOAuthFlows=["code"],
        CallbackURLs=["http://localhost:8765/callback"],
    )["UserPoolClient"]["ClientId"]
    cognito.create_group(UserPoolId=pool, GroupName="admin")
    return UserPool(pool, client, f"{stack.moto.url}/{pool}/.well-known/jwks.json")


def create_user(stack: Stack, pool: UserPool, username: str, password: str, *, admin: bool = False) -> None:
    cognito: CognitoIdentityProviderClient = stack.moto.client("cognito-idp")
    cognito.admin_create_user(UserPoolId=pool.pool_id, Username=username, MessageAction="SUPPRESS")
    cognito.admin_set_user_password(UserPoolId=pool.pool_id, Username=username, Password=password, Permanent=True)
    if admin:
        cognito.admin_add_user_to_group(UserPoolId=pool.pool_id, Username=username, GroupName="admin")


def id_token(stack: Stack, pool: UserPool, username: str, password: str) -> str:
    """A user's ID token from the local Cognito (USER_PASSWORD_AUTH), as `tl login --password` gets one."""
    cognito: CognitoIdentityProviderClient = stack.moto.client("cognito-idp")
    auth = cognito.initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )
    return auth["AuthenticationResult"]["IdToken"]


def function_env(stack: Stack, *, jwks_url: str, issuer: str, audience: str) -> dict[str, str]:
    """The TL_* variables of the functions, pointed at the local stack (its own Redis; the full stack adds the
    node's, ``devstack.deploy.node_queue_env``) and at the signing keys of ``issuer``."""
    return {
        "TL_REDIS_URL": stack.redis.url,
        "TL_JWKS_URL": jwks_url,
        "TL_JWT_ISSUER": issuer,
        "TL_JWT_AUDIENCE": audience,
        "TL_REPLY_BUCKET": stack.bucket,
        **stack.moto.aws_env(),
    }


def edge_env(stack: Stack, pool: UserPool) -> dict[str, str]:
    """The functions' variables behind the local edge: the (moto) user pool's tokens, and ``/resize`` inline (the
    local EC2 stops at once; on AWS the function re-invokes itself)."""
    keys = {"jwks_url": pool.jwks_url, "issuer": pool.issuer, "audience": pool.client_id}
    return {**function_env(stack, **keys), "TL_RESIZE_MODE": "inline"}


def tl_env(stack: Stack, api_url: str, pool: UserPool, token_file: Path, **more: str) -> dict[str, str]:
    """The environment a ``tl`` started by a test or the demo gets: nothing of the caller's TL_/AWS_ variables, the
    local AWS, the API at ``api_url``, the pool's app client, a token file of its own."""
    return {**clean_env(), **stack.moto.aws_env(), "TL_API_URL": api_url, "TL_COGNITO_CLIENT_ID": pool.client_id,
            "TL_TOKEN_FILE": str(token_file), **more}  # fmt: skip


class LocalEdgeServer(Process):
    """``python -m lambdas.local_api`` on a free port."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        base = clean_env()
        argv = [sys.executable, "-m", "lambdas.local_api", "--port", str(self.port)]
        super().__init__(f"edge-{self.port}", argv, workdir, {**base, **env, "PYTHONPATH": pythonpath()})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        self.wait_up(lambda: http_ok(f"{self.url}/ping"), 30, "local edge")
