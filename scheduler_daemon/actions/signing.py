"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A secret is ``whsec_`` followed by the base64 of the key (24 to 64 bytes, as the specification
recommends). A request carries ``webhook-id``, ``webhook-timestamp`` (integer Unix seconds) and
``webhook-signature``: for each key, ``v1,`` and the base64 of
HMAC-SHA256(key, ``"{id}.{timestamp}.{body}"``), separated by spaces, so that during a
rotation a receiver that knows either secret can verify the request. Pure functions only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SIGNING_HEADERS = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)


class InvalidSecret(ValueError):
    """A signing secret that is not ``whsec_<base64>``; the message names the field and never
    repeats the secret."""


def parse_secret(secret: str, field: str = "signing_secret") -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ``field`` names it in the error."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"{field} must be {SECRET_PREFIX!r} followed by base64")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret(
            f"{field}: the part after {SECRET_PREFIX!r} is not valid base64"
        ) from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise InvalidSecret(
            f"{field} must decode to {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes of key"
        )
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature: ``v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per key, space-separated."""
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def signing_headers(
    keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` (the exact bytes sent)."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature_header(keys, msg_id, timestamp, body),
    }
