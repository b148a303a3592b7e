"""Cognito JWT checks shared by the router, the other HTTP functions and the local edge.

Signatures are checked by PyJWT. Its RS256 normally comes from ``cryptography``, a 4.7 MB wheel that alone
would make the router's zip five times its size; here PyJWT's RS256 is backed by ``rsa`` (pure Python,
PKCS#1 v1.5 with SHA-256, 35 kB) through PyJWT's own ``Algorithm`` interface. The claims are then checked by
PyJWT as usual. Only RS256 is registered, so ``none``, HS256 and every other algorithm fail before any key is
looked at.

Answers: no ``Authorization`` header → 401; anything wrong with a token that is there → 403.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import jwt
import rsa
from jwt.algorithms import Algorithm

from lambdas.common.http import HttpError
from lambdas.common.logs import log

ALGORITHM: Final = "RS256"
MIN_KEY_BITS: Final = 2048
MAX_TOKEN_BYTES: Final = 8192
KEYS_MAX_AGE_S: Final = 600.0
"""Keys are re-read at least this often (Cognito rotates keys rarely; ten minutes bounds a revoked key)."""
UNKNOWN_KID_REFRESH_S: Final = 10.0
"""A token with a key id we do not know triggers one re-read of the keys, at most this often."""
LEEWAY_S: Final = 5


class AuthError(Exception):
    """Why a request is not authenticated: 401 (no token) or 403 (a token that is not acceptable)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class KeysUnavailable(Exception):
    """The JWKS could not be read and no key is cached: nothing can be verified (answered with 503)."""


def _b64int(value: object) -> int:
    if not isinstance(value, str) or not value:
        raise jwt.InvalidKeyError("JWK n and e must be base64url strings")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


class RsaSha256(Algorithm):
    """RS256 (RSASSA-PKCS1-v1_5 with SHA-256) for PyJWT, on the pure-Python ``rsa`` package."""

    def prepare_key(self, key: Any) -> rsa.PublicKey | rsa.PrivateKey:
        if isinstance(key, rsa.PublicKey | rsa.PrivateKey):
            return key
        raise jwt.InvalidKeyError("RS256 needs an rsa.PublicKey (from a JWK) or an rsa.PrivateKey")

    def sign(self, msg: bytes, key: Any) -> bytes:
        if not isinstance(key, rsa.PrivateKey):
            raise jwt.InvalidKeyError("signing needs an rsa.PrivateKey")
        return rsa.sign(msg, key, "SHA-256")

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        if not isinstance(key, rsa.PublicKey):
            return False
        try:
            return rsa.verify(msg, sig, key) == "SHA-256"
        except rsa.VerificationError:
            return False

    @staticmethod
    def from_jwk(jwk: str | dict[str, Any]) -> rsa.PublicKey:
        data = json.loads(jwk) if isinstance(jwk, str) else jwk
        if data.get("kty") != "RSA":
            raise jwt.InvalidKeyError("not an RSA key")
        key = rsa.PublicKey(_b64int(data.get("n")), _b64int(data.get("e")))
        if key.n.bit_length() < MIN_KEY_BITS:
            raise jwt.InvalidKeyError(f"RSA key shorter than {MIN_KEY_BITS} bits")
        return key

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        def b64(n: int) -> str:
            return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

        jwk = {"kty": "RSA", "alg": ALGORITHM, "use": "sig", "n": b64(key_obj.n), "e": b64(key_obj.e)}
        return jwk if as_dict else json.dumps(jwk)


def fetch_url(url: str) -> bytes:
    """The JWKS document: from Cognito (``https://…/.well-known/jwks.json``), or from the copy the ``aws_stack`` role
    keeps in S3 (``s3://bucket/key``) for the functions in the private subnets, where S3 is reached through the
    gateway endpoint and Cognito documents no IPv6 endpoint (docs/aws.md, "What the functions reach")."""
    if url.startswith("s3://"):
        from lambdas.common.clients import read_s3  # noqa: PLC0415 (boto3 only where needed)

        return read_s3(url)  # its S3ReadError is the OSError the cache handles
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (the URL is the operator's JWKS)
        return bytes(response.read())


class JwksCache:
    """The signing keys of a user pool by key id, re-read every ``max_age_s`` and on an unknown key id."""

    def __init__(
        self,
        url: str,
        *,
        fetch: Callable[[str], bytes] = fetch_url,
        clock: Callable[[], float] = time.monotonic,
        max_age_s: float = KEYS_MAX_AGE_S,
    ) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self._max_age_s = max_age_s
        self._keys: dict[str, rsa.PublicKey] = {}
        self._read_at = float("-inf")
        self._forced_at = float("-inf")
        self._lock = threading.Lock()
        self.reads = 0

    def key(self, kid: str) -> rsa.PublicKey | None:
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self._max_age_s:
                self._refresh(now)
            if kid not in self._keys and now - self._forced_at >= UNKNOWN_KID_REFRESH_S:
                self._forced_at = now
                self._refresh(now)
            return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        self.reads += 1
        try:
            document = json.loads(self._fetch(self.url))
            keys: dict[str, rsa.PublicKey] = {}
            for jwk in document["keys"]:
                if jwk.get("kty") != "RSA" or jwk.get("alg", ALGORITHM) != ALGORITHM or "kid" not in jwk:
                    continue
                try:
                    keys[str(jwk["kid"])] = RsaSha256.from_jwk(jwk)
                except (jwt.InvalidKeyError, ValueError) as exc:  # one bad key does not discard the others
                    log("warning", "JWKS key skipped", kid=jwk["kid"], error=str(exc))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if not self._keys:
                raise KeysUnavailable(f"signing keys unavailable from {self.url}: {exc}") from None
            log("warning", "JWKS not refreshed; keeping the keys read before", error=str(exc))
            self._read_at = now - self._max_age_s + UNKNOWN_KID_REFRESH_S  # try again soon, not on every call
            return
        self._keys = keys
        self._read_at = now


@dataclass(frozen=True)
class Claims:
    sub: str
    username: str
    groups: tuple[str, ...]

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Claims:
        groups = payload.get("cognito:groups") or ()
        if isinstance(groups, str):  # API Gateway passes list claims to Lambda as "[a b]"
            groups = groups.strip("[]").split()
        return cls(
            sub=str(payload["sub"]),
            username=str(payload.get("cognito:username") or payload.get("username") or payload["sub"]),
            groups=tuple(str(g) for g in groups),
        )


_REASONS: Final = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
)

_jws = jwt.PyJWS(algorithms=[])
_jws.register_algorithm(ALGORITHM, RsaSha256())
_claims = jwt.PyJWT()
_CLAIM_OPTIONS: Final[dict[str, Any]] = {
    "verify_signature": False,  # verified just before, by _jws
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iat": True,
    "verify_aud": True,
    "verify_iss": True,
    "require": ["exp", "iat", "iss", "sub", "token_use"],
}


class Verifier:
    """Turns an ``Authorization`` header into the caller's claims, or an ``AuthError``."""

    def __init__(self, keys: JwksCache, issuer: str, audience: str, token_use: str = "id") -> None:  # noqa: S107
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.token_use = token_use

    def claims(self, authorization: str | None) -> Claims:
        if authorization is None or not authorization.strip():
            raise AuthError(401, "missing bearer token in the Authorization header")
        scheme, _, rest = authorization.strip().partition(" ")
        token = rest.strip() if scheme.lower() == "bearer" else authorization.strip()
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(403, "token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(403, "malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise AuthError(403, f"algorithm must be {ALGORITHM}")
        key = self.keys.key(str(header.get("kid", "")))
        if key is None:
            raise AuthError(403, "unknown signing key")
        try:
            _jws.decode_complete(token, key=key, algorithms=[ALGORITHM])  # type: ignore[arg-type] # rsa key
            payload = _claims.decode(
                token,
                options=_CLAIM_OPTIONS,  # type: ignore[arg-type]
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
            )
        except jwt.PyJWTError as exc:
            reason = next((text for kind, text in _REASONS if isinstance(exc, kind)), f"invalid token: {exc}")
            raise AuthError(403, reason) from None
        if payload.get("token_use") != self.token_use:
            raise AuthError(403, f"token_use must be {self.token_use}")
        sub = payload.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= 128:  # noqa: PLR2004
            raise AuthError(403, "sub must be a string of 1 to 128 characters")
        return Claims.from_payload(payload)


def authenticate(verifier: Verifier, authorization: str | None) -> Claims:
    """The caller's claims, or the ``HttpError`` every entry point answers: 401 without a token, 403 for a token
    that is not acceptable, 503 when the signing keys cannot be read (our problem, not the caller's)."""
    try:
        return verifier.claims(authorization)
    except AuthError as exc:
        raise HttpError(exc.status, exc.reason) from None
    except KeysUnavailable as exc:
        log("error", "cannot verify tokens", error=str(exc))
        raise HttpError(503, "cannot verify tokens right now; try again", status="unavailable") from None
