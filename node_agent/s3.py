"""S3 object writes and reads on the agent's event loop: aiohttp for the HTTP, a Signature Version 4 of its own.

Why not the boto3 client for the reply: a ``PutObject`` through botocore's request machinery costs ~2.5 ms of CPU
and a thread hop per job, a third of the agent's own cost; signing with botocore's ``S3SigV4Auth`` alone still
cost 0.3 to 0.5 ms a job, most of it in its headers' ``email.message`` class (``bench/agent.py``,
docs/development.md). What stays botocore's:

- **the endpoint**: each object's URL starts with the prefix botocore itself builds for the bucket (regional
  endpoint, virtual-hosted or path style, a custom ``AWS_ENDPOINT_URL``), read once from the request its client
  would send (``_bucket_url``);
- **the credentials**: the session's provider chain (the instance profile on the node). A frozen copy is reused
  for at most a minute; botocore renews temporary credentials 15 minutes before they expire (its advisory
  refresh), so a copy that old is still valid.

The signature (``SigV4``) is the one documented for S3 with the payload in a single chunk, signed; its tests are
AWS's own worked examples and botocore's signer over the agent's requests, and moto, which recomputes it.

Errors are ``S3Error`` with the HTTP status and S3's error code, for the caller to retry or act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, urlsplit

import aiohttp
from botocore import UNSIGNED
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from yarl import URL

if TYPE_CHECKING:
    from boto3 import Session
    from botocore.credentials import ReadOnlyCredentials

CREDENTIALS_REUSE_S: Final = 60.0
_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


class S3Error(Exception):
    """S3 did not answer 2xx (``status``, ``code``), or could not be reached (``status`` 0)."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class SigV4:
    """Signature Version 4 of an S3 request whose payload is sent and signed in one chunk: "Signature Calculations
    for the Authorization Header: Transferring Payload in a Single Chunk (AWS Signature Version 4)", Amazon S3 API
    Reference. Every header given is signed, with ``host``, ``x-amz-date``, ``x-amz-content-sha256`` (the payload's
    SHA-256: S3 requires it with this signature) and, for temporary credentials, ``x-amz-security-token``. The
    signing key depends only on the secret, the day, the region and the service, so it is derived once a day.
    The path, with no query string, must be sent as given: S3's canonical URI is the URI-encoded path, not
    normalised or encoded again."""

    ALGORITHM: Final = "AWS4-HMAC-SHA256"

    def __init__(self, credentials: ReadOnlyCredentials, region: str) -> None:
        self._credentials = credentials
        self._scope = f"{region}/s3/aws4_request"
        self._day = ""
        self._key = b""

    def headers(
        self, method: str, host: str, path: str, body: bytes, headers: Mapping[str, str], *, at: float | None = None
    ) -> dict[str, str]:
        """The headers to send: ``headers``, ``Host`` and the signature's own (``at``: the signing time, now)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at))
        day = stamp[:8]
        if day != self._day:
            key = f"AWS4{self._credentials.secret_key}".encode()
            for part in (day, *self._scope.split("/")):
                key = hmac.digest(key, part.encode(), "sha256")
            self._day, self._key = day, key
        sent = {"Host": host, **headers, "X-Amz-Date": stamp, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
        if self._credentials.token:
            sent["X-Amz-Security-Token"] = self._credentials.token
        canonical = {name.lower(): " ".join(value.split()) for name, value in sent.items()}
        names = sorted(canonical)
        signed_names = ";".join(names)
        request = "\n".join(
            (method, path, "", *(f"{name}:{canonical[name]}" for name in names), "", signed_names,
             canonical["x-amz-content-sha256"])
        )  # fmt: skip
        scope = f"{day}/{self._scope}"
        to_sign = f"{self.ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        sent["Authorization"] = (
            f"{self.ALGORITHM} Credential={self._credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return sent


class _Seen(Exception):
    """Stops a botocore request once its URL is known."""


def _bucket_url(session: Session, bucket: str, config: Config) -> tuple[str, str]:
    """botocore's own URL for the bucket, and the region it signs for: the request its client would send for a
    placeholder key, stopped before it leaves (unsigned: no credentials and no network needed). Not a presigned
    URL: botocore presigns with the global endpoint, ``<bucket>.s3.amazonaws.com``, where its requests go to the
    bucket's regional one, ``<bucket>.s3.<region>.amazonaws.com``."""
    client = session.client("s3", config=config.merge(Config(signature_version=UNSIGNED)))
    seen: list[str] = []

    def stop(request: AWSRequest, **_: object) -> None:
        seen.append(str(request.url))
        raise _Seen

    client.meta.events.register("before-send.s3.HeadObject", stop)
    with contextlib.suppress(_Seen):
        client.head_object(Bucket=bucket, Key="k")
    return seen[0].removesuffix("/k"), client.meta.region_name


class SignedS3:
    """``PUT`` and ``GET`` of one bucket's objects, signed by botocore, sent by aiohttp on the running loop."""

    def __init__(
        self,
        session: Session,
        bucket: str,
        config: Config,
        executor: Executor,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
    ) -> None:
        self.bucket = bucket
        self._session = session
        self._executor = executor
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._http: aiohttp.ClientSession | None = None
        prefix, self._region = _bucket_url(session, bucket, config)
        origin = urlsplit(prefix)
        self._origin, self._base_path = f"{origin.scheme}://{origin.netloc}", origin.path
        # as botocore and aiohttp both write it: the port only where it is not the scheme's own
        self._host = origin.netloc.removesuffix({"http": ":80", "https": ":443"}[origin.scheme])
        self._signer: SigV4 | None = None
        self._signer_at = float("-inf")

    async def put(self, key: str, body: bytes, headers: Mapping[str, str]) -> None:
        await self._send("PUT", key, body, headers)

    async def get(self, key: str) -> bytes:
        return await self._send("GET", key, b"", {})

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def url(self, key: str) -> str:
        """The object's URL, as botocore would send the request."""
        return f"{self._origin}{self._path(key)}"

    def _path(self, key: str) -> str:
        return f"{self._base_path}/{quote(key, safe='/~')}"

    async def _send(self, method: str, key: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        what = f"s3://{self.bucket}/{key}"
        signer = await self._fresh_signer(what)
        path = self._path(key)
        sent = signer.headers(method, self._host, path, body, headers)
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._http.request(
                method, URL(f"{self._origin}{path}", encoded=True), data=body or None, headers=sent
            ) as response:
                answer = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise S3Error(f"{what}: {type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:  # noqa: PLR2004 - HTTP's success range
            return answer
        found = _CODE.search(answer)
        code = found.group(1).decode(errors="replace") if found else ""
        raise S3Error(f"{what}: HTTP {status} {code}".rstrip(), status=status, code=code)

    async def _fresh_signer(self, what: str) -> SigV4:
        """The signer over a frozen copy of the session's credentials, renewed in the executor (the provider may
        call IMDS) once the copy is a minute old."""
        if self._signer is None or time.monotonic() - self._signer_at > CREDENTIALS_REUSE_S:
            loop = asyncio.get_running_loop()
            try:
                credentials = await loop.run_in_executor(self._executor, self._resolve)
            except BotoCoreError as exc:
                raise S3Error(f"{what}: {exc}") from None
            self._signer, self._signer_at = SigV4(credentials, self._region), time.monotonic()
        return self._signer

    def _resolve(self) -> ReadOnlyCredentials:
        credentials = self._session.get_credentials()
        if credentials is None:
            raise S3Error(f"s3://{self.bucket}: no AWS credentials (instance profile, environment or profile)")
        return credentials.get_frozen_credentials()
