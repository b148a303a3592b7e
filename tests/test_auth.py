"""Token checks: the attack corpus, key caching and rotation, and a token that moto's Cognito issued."""

from __future__ import annotations

import time

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from lambdas.common.auth import AuthError, JwksCache, KeysUnavailable, RsaSha256, Verifier
from tests.support import ATTACKS, AUDIENCE, ISSUER, JwksServer, SigningKey, none_token


@pytest.fixture
def key(signing_key: SigningKey) -> SigningKey:
    return signing_key  # served by the `jwks` fixture


@pytest.fixture(scope="module")
def stranger(signing_key: SigningKey) -> SigningKey:
    return SigningKey(signing_key.kid)  # same kid, different key: a forged signature


@pytest.fixture
def verifier(jwks: JwksServer) -> Verifier:
    return Verifier(JwksCache(jwks.url), ISSUER, AUDIENCE)


def status_of(verifier: Verifier, header: str | None) -> tuple[int, str]:
    with pytest.raises(AuthError) as caught:
        verifier.claims(header)
    return caught.value.status, caught.value.reason


def test_a_valid_id_token_gives_its_claims(verifier: Verifier, key: SigningKey) -> None:
    claims = verifier.claims("Bearer " + key.token(sub="user-1", **{"cognito:groups": ["admin"]}))
    assert (claims.sub, claims.username, claims.groups) == ("user-1", "alice", ("admin",))
    assert verifier.claims(key.token(sub="bare")).sub == "bare"  # without "Bearer", as API Gateway accepts


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_token_is_401(verifier: Verifier, header: str | None) -> None:
    assert status_of(verifier, header)[0] == 401


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_forged_or_unfit_token_is_403(
    verifier: Verifier, key: SigningKey, stranger: SigningKey, attack: str
) -> None:
    token = ATTACKS[attack](key, stranger)
    status, reason = status_of(verifier, f"Bearer {token}")
    assert status == 403, reason
    assert reason


def test_the_reason_names_what_is_wrong(verifier: Verifier, key: SigningKey) -> None:
    assert status_of(verifier, key.token(exp=int(time.time()) - 60))[1] == "token expired"
    assert status_of(verifier, key.token(aud="x"))[1] == "wrong audience"
    assert status_of(verifier, key.token(token_use="access"))[1] == "token_use must be id"
    assert status_of(verifier, none_token())[1] == "algorithm must be RS256"


def test_keys_are_read_once_then_cached(verifier: Verifier, jwks: JwksServer, key: SigningKey) -> None:
    for _ in range(20):
        verifier.claims(key.token())
    assert jwks.reads == 1


def test_keys_are_read_again_after_ten_minutes(jwks: JwksServer, key: SigningKey) -> None:
    now = [1000.0]
    v = Verifier(JwksCache(jwks.url, clock=lambda: now[0]), ISSUER, AUDIENCE)
    v.claims(key.token())
    now[0] += 599
    v.claims(key.token())
    assert jwks.reads == 1
    now[0] += 2
    v.claims(key.token())
    assert jwks.reads == 2


def test_a_rotated_key_is_found_with_one_refresh(jwks: JwksServer, key: SigningKey) -> None:
    v = Verifier(JwksCache(jwks.url), ISSUER, AUDIENCE)
    v.claims(key.token())
    new = SigningKey("key-2")
    jwks.keys = [key, new]
    assert v.claims(new.token(sub="after-rotation")).sub == "after-rotation"
    assert jwks.reads == 2


def test_unknown_kids_cannot_hammer_the_jwks(verifier: Verifier, jwks: JwksServer, key: SigningKey) -> None:
    for n in range(10):
        status_of(verifier, key.token(headers={"kid": f"made-up-{n}"}))
    assert jwks.reads <= 2  # the first read, then at most one forced refresh per 10 s


def test_keys_shorter_than_2048_bits_are_ignored(key: SigningKey) -> None:
    weak = SigningKey("weak", bits=1024)
    server = JwksServer([weak, key]).start()
    try:
        v = Verifier(JwksCache(server.url), ISSUER, AUDIENCE)
        with pytest.warns(InsecureKeyLengthWarning):  # PyJWT itself only warns when it signs with such a key
            weak_token = weak.token()
        assert status_of(v, weak_token) == (403, "unknown signing key")
        assert v.claims(key.token(sub="strong")).sub == "strong"
    finally:
        server.stop()
    with pytest.raises(jwt.InvalidKeyError, match="shorter than 2048"):
        RsaSha256.from_jwk(weak.jwk())


def test_unreachable_keys_are_a_service_problem_not_a_user_one(jwks: JwksServer, key: SigningKey) -> None:
    jwks.broken = True
    v = Verifier(JwksCache(jwks.url), ISSUER, AUDIENCE)
    with pytest.raises(KeysUnavailable):
        v.claims(key.token())


def test_keys_read_before_stay_in_use_when_a_refresh_fails(jwks: JwksServer, key: SigningKey) -> None:
    now = [0.0]
    v = Verifier(JwksCache(jwks.url, clock=lambda: now[0]), ISSUER, AUDIENCE)
    v.claims(key.token())
    jwks.broken = True
    now[0] += 700
    assert v.claims(key.token(sub="still-works")).sub == "still-works"


def test_pure_python_rs256_verifies_what_cryptography_signed(key: SigningKey) -> None:
    token = key.token()
    signing_input, _, signature = token.rpartition(".")
    public = RsaSha256.from_jwk(key.jwk())
    assert RsaSha256().verify(signing_input.encode(), public, jwt.utils.base64url_decode(signature))
    assert not RsaSha256().verify(signing_input.encode() + b"x", public, jwt.utils.base64url_decode(signature))
