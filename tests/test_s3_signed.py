"""The agent's own S3 requests (node_agent/s3.py): the reply's PUT and its read-back, signed by botocore and sent
by aiohttp, against a moto server whose IAM access control is on.

With access control on, moto recomputes each request's Signature Version 4 from what it received (botocore's
signer over the signed headers, the path and the payload hash) and refuses a mismatch, and it evaluates the
caller's S3 statements on the bucket and key. So a request that is signed over something other than what is sent
(a header, the escaped key) fails here as it would on S3. What moto cannot show, the URL of a real region, is held
to the URL botocore's own client sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from devstack.procs import free_port
from devstack.servers import AWS_REGION, MotoServer
from node_agent.s3 import S3Error, SignedS3

pytestmark = pytest.mark.slow

BUCKET = "tl-fif-replies-test"
WRITER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": f"arn:aws:s3:::{BUCKET}/replies/*"}
    ],
}
CONFIG = Config(region_name=AWS_REGION, retries={"mode": "standard", "max_attempts": 1})


@pytest.fixture(scope="module")
def strict_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, dict[str, str]]]:
    """A moto server of this module's own (access control is server-wide), the bucket, and a writer's key."""
    moto = MotoServer(tmp_path_factory.mktemp("moto-s3"))
    moto.start()
    try:
        moto.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": AWS_REGION})
        moto.enforce_iam()
        iam = moto.client("iam")
        iam.create_user(UserName="writer")
        iam.put_user_policy(UserName="writer", PolicyName="replies", PolicyDocument=json.dumps(WRITER_POLICY))
        key = iam.create_access_key(UserName="writer")["AccessKey"]
        yield moto, {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    finally:
        moto.stop()


def signed(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, **credentials: str) -> SignedS3:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)  # as the agent finds it: botocore reads it at client creation
    session = boto3.Session(region_name=AWS_REGION, **credentials)
    return SignedS3(session, BUCKET, CONFIG, ThreadPoolExecutor(max_workers=1))


def run(s3: SignedS3, *calls: Any) -> list[Any]:
    async def go() -> list[Any]:
        try:
            return [await call(s3) for call in calls]
        finally:
            await s3.aclose()

    return asyncio.run(go())


def test_a_signed_put_is_taken_once_and_read_back(
    strict_moto: tuple[MotoServer, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    moto, writer = strict_moto
    s3 = signed(moto, monkeypatch, **writer)
    body = json.dumps({"id": "one", "output": "grüße"}, ensure_ascii=False).encode()
    once = {"Content-Type": "application/json", "If-None-Match": "*"}

    async def second_put(s3: SignedS3) -> int:
        with pytest.raises(S3Error) as refused:
            await s3.put("replies/one.json", b"{}", once)
        return refused.value.status

    _, read, status = run(
        s3, lambda s3: s3.put("replies/one.json", body, once), lambda s3: s3.get("replies/one.json"), second_put
    )
    assert read == body
    assert status == 412  # If-None-Match: the first reply stands
    stored = moto.client("s3").get_object(Bucket=BUCKET, Key="replies/one.json")
    assert stored["ContentType"] == "application/json"


def test_a_key_that_needs_escaping_is_signed_as_it_is_sent(
    strict_moto: tuple[MotoServer, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    moto, writer = strict_moto
    key = "replies/a b+c~é=1.json"
    run(signed(moto, monkeypatch, **writer), lambda s3: s3.put(key, b"{}", {"Content-Type": "application/json"}))
    assert moto.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"{}"


def test_a_wrong_secret_is_refused_for_its_signature(
    strict_moto: tuple[MotoServer, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above is real: the same request signed with another secret does not pass."""
    moto, writer = strict_moto
    s3 = signed(moto, monkeypatch, **{**writer, "aws_secret_access_key": "not-the-secret"})
    with pytest.raises(S3Error) as refused:
        run(s3, lambda s3: s3.put("replies/two.json", b"{}", {}))
    assert (refused.value.status, refused.value.code) == (403, "SignatureDoesNotMatch")


def test_a_key_outside_the_writers_prefix_is_refused_with_s3s_code(
    strict_moto: tuple[MotoServer, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    moto, writer = strict_moto
    with pytest.raises(S3Error) as refused:
        run(signed(moto, monkeypatch, **writer), lambda s3: s3.put("inbox/three.json", b"{}", {}))
    assert (refused.value.status, refused.value.code) == (403, "AccessDenied")
    assert "s3://tl-fif-replies-test/inbox/three.json: HTTP 403 AccessDenied" in str(refused.value)


def test_an_unreachable_endpoint_is_an_error_to_retry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    session = boto3.Session(region_name=AWS_REGION, aws_access_key_id="a", aws_secret_access_key="b")
    s3 = SignedS3(session, BUCKET, CONFIG, ThreadPoolExecutor(max_workers=1))
    with pytest.raises(S3Error) as refused:
        run(s3, lambda s3: s3.put("replies/four.json", b"{}", {}))
    assert refused.value.status == 0
    assert "ClientConnectorError" in str(refused.value)


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:4566"], ids=["aws-region", "custom-endpoint"])
def test_the_url_is_the_one_botocores_client_sends(endpoint: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto answers on one address only; on AWS the bucket is in the host name (virtual-hosted style, regional
    endpoint). Both are botocore's choice, and the agent's URL is the one botocore's own PutObject goes to."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    session = boto3.Session(region_name="eu-central-1", aws_access_key_id="a", aws_secret_access_key="b")
    sent: list[str] = []

    class Sent(Exception):
        """Stops botocore's request here, once its URL is known: nothing leaves the machine."""

    def capture(request: Any, **_: Any) -> None:
        sent.append(request.url)
        raise Sent

    client = session.client("s3", config=CONFIG)
    client.meta.events.register("before-send.s3.PutObject", capture)
    with pytest.raises(Sent):
        client.put_object(Bucket=BUCKET, Key="replies/x.json", Body=b"{}")
    ours = SignedS3(session, BUCKET, CONFIG, ThreadPoolExecutor(max_workers=1)).url("replies/x.json")
    assert ours == sent[0]
    if endpoint is None:
        assert ours == f"https://{BUCKET}.s3.eu-central-1.amazonaws.com/replies/x.json"
