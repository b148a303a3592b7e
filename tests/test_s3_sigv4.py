"""The agent's Signature Version 4 (``node_agent.s3.SigV4``), without a server: AWS's own worked examples, and
botocore's ``S3SigV4Auth`` over the requests the agent sends. tests/test_s3_signed.py sends them to moto, which
recomputes the signature and refuses a wrong one; these cover what moto cannot show (HTTPS to a virtual-hosted
bucket, temporary credentials, a new day)."""

from __future__ import annotations

import calendar
import datetime
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from node_agent.s3 import SigV4

# "Signature Calculations for the Authorization Header: Transferring Payload in a Single Chunk (AWS Signature
# Version 4)", Amazon S3 API Reference, section "Examples: Signature Calculations": its key, time and signatures.
EXAMPLE = ReadOnlyCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None)
EXAMPLE_AT = calendar.timegm((2013, 5, 24, 0, 0, 0))
EXAMPLE_HOST = "examplebucket.s3.amazonaws.com"


def signature(headers: dict[str, str]) -> str:
    return headers["Authorization"].rpartition("Signature=")[2]


def test_awss_put_object_example() -> None:
    headers = SigV4(EXAMPLE, "us-east-1").headers(
        "PUT",
        EXAMPLE_HOST,
        "/test%24file.text",
        b"Welcome to Amazon S3.",
        {"Date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY"},
        at=EXAMPLE_AT,
    )
    assert headers["X-Amz-Content-SHA256"] == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
        "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    )


def test_awss_get_object_example() -> None:
    headers = SigV4(EXAMPLE, "us-east-1").headers(
        "GET", EXAMPLE_HOST, "/test.txt", b"", {"Range": "bytes=0-9"}, at=EXAMPLE_AT
    )
    assert headers["X-Amz-Content-SHA256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert signature(headers) == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


Request = tuple[str, str, bytes, dict[str, str]]
"""The method, the URL, the payload and the caller's headers."""


def botocores(
    credentials: ReadOnlyCredentials, request: Request, at: datetime.datetime, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The headers botocore's S3 signer sends with the same request, signed at the same time."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: at)
    method, url, body, headers = request
    sent = AWSRequest(method, url, data=body, headers=headers)
    botocore.auth.S3SigV4Auth(credentials, "s3", "eu-central-1").add_auth(sent)
    return {name.lower(): value for name, value in sent.headers.items()}


def ours(signer: SigV4, request: Request, at: datetime.datetime) -> dict[str, str]:
    method, url, body, headers = request
    parts = urlsplit(url)
    sent = signer.headers(method, parts.netloc, parts.path, body, headers, at=calendar.timegm(at.timetuple()))
    return {name.lower(): value for name, value in sent.items()}


REPLY_URL = "https://tl-fif-replies.s3.eu-central-1.amazonaws.com/replies/0b5e7c2e-9d9b-4f57-a3a3-6d0f5c0f8a11.json"
AGENT_REQUESTS = [
    pytest.param(
        ("PUT", REPLY_URL, '{"output": "grüße"}'.encode(), {"Content-Type": "application/json", "If-None-Match": "*"}),
        id="the reply's put, virtual-hosted",
    ),
    pytest.param(("GET", REPLY_URL, b"", {}), id="the read-back, no payload"),
    pytest.param(
        ("PUT", "http://127.0.0.1:4566/tl-fif-replies/replies/a%20b%2Bc~%C3%A9%3D1.json", b"{}", {}),
        id="path style, a port, an escaped key",
    ),
    pytest.param(
        ("PUT", REPLY_URL, b"{}", {"Content-Type": " application/json;   charset=utf-8 "}),
        id="a header value trimmed, its runs of spaces one",
    ),
]


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////wEaDH+session/token=="], ids=["keys", "session"])
@pytest.mark.parametrize("request_", AGENT_REQUESTS)
def test_the_agents_requests_are_signed_as_botocore_signs_them(
    request_: Request, token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = ReadOnlyCredentials("AKIDAGENT", "the/agent+secret", token)
    at = datetime.datetime(2026, 12, 6, 23, 59, 58)
    theirs = botocores(credentials, request_, at, monkeypatch)
    assert ours(SigV4(credentials, "eu-central-1"), request_, at) == {"host": urlsplit(request_[1]).netloc, **theirs}
    assert ("x-amz-security-token" in theirs) is (token is not None)


def test_a_new_day_derives_a_new_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The signing key is kept for its day: the first request after midnight is signed with the next day's."""
    credentials = ReadOnlyCredentials("AKIDAGENT", "the/agent+secret", None)
    signer = SigV4(credentials, "eu-central-1")
    request: Request = ("PUT", "https://tl-fif-replies.s3.eu-central-1.amazonaws.com/replies/x.json", b"{}", {})
    for at in (datetime.datetime(2026, 12, 6, 23, 59, 59), datetime.datetime(2026, 12, 7, 0, 0, 1)):
        signed = ours(signer, request, at)
        assert signed["authorization"] == botocores(credentials, request, at, monkeypatch)["authorization"]
        assert f"/{at:%Y%m%d}/eu-central-1/s3/aws4_request" in signed["authorization"]
