"""Keeping credentials out of logs and stored attempt text.

``redact_url`` masks what a URL may carry of a credential: its userinfo (``user:pass@``) and
the values of query (and fragment) parameters whose names look secret (``token``, ``api_key``,
``X-Amz-Signature``, ``accessToken``, ...). ``Redactor`` cleans free text we do not control,
such as an exception's message or a response body: URLs in it are passed through
``redact_url`` and every known secret value of the request is masked wherever it appears.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus

from yarl import URL

REDACTED = "***"

# A parameter is secret when its name, or one word of it (split on punctuation and camelCase),
# is one of these: "token", "refresh_token", "X-Amz-Security-Token", "accessToken", "apiKey".
SECRET_WORDS = frozenset(
    {
        "token",
        "key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "pwd",
        "signature",
        "sig",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "jwt",
    }
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_URL_IN_TEXT = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>`]+")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter named ``name`` holds a credential."""
    words = _WORD_SPLIT.split(_CAMEL.sub("_", name).lower())
    return any(word in SECRET_WORDS for word in words)


def _redact_params(raw: str) -> str:
    """``a=1&token=x`` -> ``a=1&token=***``, keeping the original encoding of the rest."""
    parts = []
    for part in raw.split("&"):
        name, sep, value = part.partition("=")
        if sep and value and is_secret_name(unquote_plus(name)):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return "&".join(parts)


def redact_url(url: str | URL) -> str:
    """The URL with its userinfo and secret-looking parameter values replaced by ``***``."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        has_userinfo = parsed.raw_user is not None or parsed.raw_password is not None
        base = parsed.with_query(None).with_fragment(None)
        if has_userinfo:
            base = base.with_user(None)
        text = str(base)
    except (TypeError, ValueError):
        return "<unparsable URL>"
    if has_userinfo and "//" in text:
        scheme, _, rest = text.partition("//")
        text = f"{scheme}//{REDACTED}@{rest}"
    if parsed.raw_query_string:
        text += "?" + _redact_params(parsed.raw_query_string)
    if parsed.raw_fragment:
        text += "#" + _redact_params(parsed.raw_fragment)
    return text


def url_secrets(url: URL) -> set[str]:
    """Every credential ``url`` carries, in the spellings it may show up in elsewhere."""
    found: set[str] = set()
    for value in (url.raw_user, url.user, url.raw_password, url.password):
        if value:
            found.add(value)
    if url.user is not None or url.password is not None:
        # aiohttp turns userinfo into "Authorization: Basic base64(user:password)".
        pair = f"{url.user or ''}:{url.password or ''}".encode()
        found.add(base64.b64encode(pair).decode("ascii"))
    for raw in (url.raw_query_string, url.raw_fragment):
        for part in raw.split("&") if raw else ():
            name, sep, value = part.partition("=")
            if sep and value and is_secret_name(unquote_plus(name)):
                found.update({value, unquote_plus(value)})
    return found


def header_secrets(headers: Mapping[str, str], redacted_names: Iterable[str]) -> set[str]:
    """The values of the headers named in ``redacted_names`` (any case), and for
    ``<scheme> <credential>`` values such as ``Bearer x`` the credential alone."""
    names = {name.lower() for name in redacted_names}
    found: set[str] = set()
    for name, value in headers.items():
        if name.lower() not in names or not value.strip():
            continue
        found.add(value)
        _scheme, _, credential = value.strip().partition(" ")
        if credential.strip():
            found.add(credential.strip())
    return found


class Redactor:
    """Cleans free text: URLs in it go through ``redact_url``, then each known secret value
    (the longest first) is replaced by ``***`` wherever it appears."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text
