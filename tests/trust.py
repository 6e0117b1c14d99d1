"""Helpers for the trust tests: person tokens minted as a customer's backend would, waiting."""

import base64
import json
import time

import jwt

from tests.waiting import wait_until


def mint(secret: str, person_key: str, expires_in: float = 300, **claims) -> str:
    payload = {"sub": person_key, "exp": int(time.time() + expires_in), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def mint_claims(secret: str, payload: dict, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(person_key: str) -> str:
    """An `alg: none` token: no signature at all."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"sub": person_key, "exp": int(time.time() + 300)}).encode())
    return f"{header}.{body}."


def with_payload_swapped(token: str, person_key: str) -> str:
    """The token with its payload rewritten for another person, signature kept."""
    header, _, signature = token.split(".")
    body = _b64(json.dumps({"sub": person_key, "exp": int(time.time() + 300)}).encode())
    return f"{header}.{body}.{signature}"


def with_signature_flipped(token: str) -> str:
    header, body, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{body}.{flipped}"


def eventually(check, timeout: float = 6.0, interval: float = 0.05):
    """Calls `check` until it returns something truthy; returns it (or fails at the deadline)."""
    return wait_until(check, timeout, interval)
