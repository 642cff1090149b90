"""Webhook signatures, Stripe's scheme: `X-Audience-Signature: t=<unix>,v1=<hex>[,v1=<hex>]`.

v1 is HMAC-SHA256(secret, f"{t}.{body}") in hex. Signing the timestamp with the body lets a
receiver refuse replays of an old delivery; there are two v1 values while a rotated-out secret
is still valid, and a receiver accepts the request when any one matches (docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

HEADER = "X-Audience-Signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def header(signing_secrets: Iterable[str], timestamp: int, body: bytes) -> str:
    return ",".join(
        [f"t={timestamp}", *(f"v1={sign(secret, timestamp, body)}" for secret in signing_secrets)]
    )
