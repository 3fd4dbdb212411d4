"""Standard Webhooks signing, secret parsing and URL redaction: pure functions.

Signatures are checked against the specification's published test vector and against an
HMAC computed here from the specification's own words, not with the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid

import pytest
from pydantic import ValidationError

from scheduler_daemon.actions.base import ActionRegistry, PayloadInvalid
from scheduler_daemon.actions.redact import Redactor, header_secrets, redact_url, url_secrets
from scheduler_daemon.actions.signing import (
    InvalidSecret,
    parse_secret,
    sign,
    signature_header,
    signing_headers,
)
from scheduler_daemon.actions.webhook import WebhookOptions, WebhookPayload
from scheduler_daemon.app import default_actions

# The test vector published with the Standard Webhooks specification (and used by its
# reference libraries).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def new_secret(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


def expected_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The specification, independently: HMAC-SHA256 keyed with the base64-decoded part
    after ``whsec_``, over ``{id}.{timestamp}.{body}``, base64, prefixed ``v1,``."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


# --- signing ------------------------------------------------------------------------------


def test_the_specification_test_vector() -> None:
    key = parse_secret(VECTOR_SECRET)
    assert sign(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    # ... which the independent computation agrees with.
    assert (
        expected_signature(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
        == VECTOR_SIGNATURE
    )


@pytest.mark.parametrize(
    "body", [b"", b"{}", b'{"a": [1, 2]}', "h\u00e9llo \u2603".encode(), bytes(range(256))]
)
def test_signature_matches_an_independent_hmac(body: bytes) -> None:
    secret = new_secret()
    msg_id = f"msg_{uuid.uuid4()}"
    signature = sign(parse_secret(secret), msg_id, 1_700_000_000, body)
    assert signature == expected_signature(secret, msg_id, 1_700_000_000, body)


def test_any_change_changes_the_signature() -> None:
    key = parse_secret(VECTOR_SECRET)
    reference = sign(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert sign(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY + b" ") != reference
    assert sign(key, VECTOR_ID, VECTOR_TIMESTAMP + 1, VECTOR_BODY) != reference
    assert sign(key, VECTOR_ID + "x", VECTOR_TIMESTAMP, VECTOR_BODY) != reference
    assert sign(parse_secret(new_secret()), VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) != reference


def test_rotation_gives_one_signature_per_secret_in_order() -> None:
    old, new = new_secret(), new_secret(24)
    header = signature_header([parse_secret(old), parse_secret(new)], "msg_1", 1_700_000_000, b"{}")
    assert header.split(" ") == [
        expected_signature(old, "msg_1", 1_700_000_000, b"{}"),
        expected_signature(new, "msg_1", 1_700_000_000, b"{}"),
    ]


def test_signing_headers() -> None:
    key = parse_secret(VECTOR_SECRET)
    assert signing_headers([key], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }


# --- secrets ------------------------------------------------------------------------------


def test_a_secret_decodes_to_its_key() -> None:
    key = os.urandom(32)
    assert parse_secret("whsec_" + base64.b64encode(key).decode()) == key


BAD_SECRETS = [
    pytest.param("", id="empty"),
    pytest.param("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="no-prefix"),
    pytest.param("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="prefix-case"),
    pytest.param("whsec_", id="prefix-only"),
    pytest.param("whsec_not*base64*at*all*hunter2hunter2", id="not-base64"),
    pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", id="bad-padding"),
    pytest.param("whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="space"),
    pytest.param("whsec_c2hvcnQ=", id="too-short"),
    pytest.param("whsec_" + base64.b64encode(b"k" * 65).decode(), id="too-long"),
    pytest.param("whsec_" + "\u00e9" * 32, id="non-ascii"),
]


@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_bad_secrets_are_rejected_naming_the_field_not_the_secret(secret: str) -> None:
    with pytest.raises(InvalidSecret) as info:
        parse_secret(secret, "payload.signing_secret")
    message = str(info.value)
    assert message.startswith("payload.signing_secret")
    body = secret.removeprefix("whsec_")
    if body:
        assert body not in message
    # No chained base64 error (whose text could quote the input) is shown with it.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


@pytest.fixture
def actions() -> ActionRegistry:
    return default_actions()


@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_a_bad_task_secret_is_a_payload_error_naming_the_field(
    actions: ActionRegistry, secret: str
) -> None:
    with pytest.raises(PayloadInvalid) as info:
        actions.validate("webhook", {"url": "https://example.com", "signing_secret": secret})
    assert [e.field for e in info.value.errors] == ["payload.signing_secret"]
    assert "signing_secret" in info.value.errors[0].message
    body = secret.removeprefix("whsec_")
    if body:
        assert body not in str(info.value)


def test_a_task_secret_of_the_wrong_type_names_the_field(actions: ActionRegistry) -> None:
    with pytest.raises(PayloadInvalid) as info:
        actions.validate("webhook", {"url": "https://example.com", "signing_secret": 12345678})
    assert [e.field for e in info.value.errors] == ["payload.signing_secret"]
    assert "12345678" not in str(info.value)


def test_a_good_task_secret_is_stored_for_the_run(actions: ActionRegistry) -> None:
    secret = new_secret()
    stored = actions.validate("webhook", {"url": "https://example.com", "signing_secret": secret})
    assert stored == {"url": "https://example.com/", "signing_secret": secret}
    parsed = actions.parse("webhook", stored)
    assert isinstance(parsed, WebhookPayload)
    assert parsed.signing_secret == secret
    assert secret not in repr(parsed)


def test_validation_errors_never_repeat_the_payload() -> None:
    """The executor writes ``str(ValidationError)`` into last_error for a payload it cannot
    parse: the URL's credentials and the secret must not be in it."""
    secret = "whsec_" + "A" * 10  # too short
    with pytest.raises(ValidationError) as info:
        WebhookPayload.model_validate(
            {
                "url": "https://user:hunter2@example.com/?token=tok123",
                "headers": {"Authorization": 5},
                "signing_secret": secret,
            }
        )
    text = str(info.value)
    for leak in ("hunter2", "tok123", secret):
        assert leak not in text


def test_global_secrets_are_checked_naming_the_setting() -> None:
    good = new_secret()
    options = WebhookOptions(signing_secrets=[good, new_secret()])
    assert options.signing_keys[0] == parse_secret(good)
    assert good not in repr(options)
    with pytest.raises(InvalidSecret, match=r"^webhook\.signing_secrets\[1\]"):
        WebhookOptions(signing_secrets=[good, "whsec_short"])
    with pytest.raises(ValueError, match="at most two"):
        WebhookOptions(signing_secrets=[good, good, good])
    with pytest.raises(TypeError):
        WebhookOptions(signing_secrets=good)


def test_redact_headers_are_matched_in_any_case() -> None:
    options = WebhookOptions(redact_headers=["Authorization", "X-Custom-Token"])
    assert options.redact_headers == frozenset({"authorization", "x-custom-token"})
    assert "cookie" in WebhookOptions().redact_headers  # the defaults without configuration


# --- redaction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://example.com/hook", "https://example.com/hook"),
        ("https://example.com/hook?a=1&b=two", "https://example.com/hook?a=1&b=two"),
        ("http://user:pw@127.0.0.1:8080/x", "http://***@127.0.0.1:8080/x"),
        ("http://user@example.com/x", "http://***@example.com/x"),
        ("http://:pw@example.com/x", "http://***@example.com/x"),
        ("http://u:p%40ss@example.com/x", "http://***@example.com/x"),
        ("https://example.com/x?token=abc", "https://example.com/x?token=***"),
        ("https://example.com/x?TOKEN=abc&page=2", "https://example.com/x?TOKEN=***&page=2"),
        (
            "https://e.com/?key=1&secret=2&password=3",
            "https://e.com/?key=***&secret=***&password=***",
        ),
        (
            "https://e.com/?signature=1&sig=2&auth=3",
            "https://e.com/?signature=***&sig=***&auth=***",
        ),
        (
            "https://e.com/?access_token=1&api_key=2&apikey=3",
            "https://e.com/?access_token=***&api_key=***&apikey=***",
        ),
        (
            "https://e.com/?accessToken=1&apiKey=2&client_secret=3&refresh-token=4",
            "https://e.com/?accessToken=***&apiKey=***&client_secret=***&refresh-token=***",
        ),
        (
            "https://b.s3.amazonaws.com/o?X-Amz-Date=20250101&X-Amz-Signature=abcdef",
            "https://b.s3.amazonaws.com/o?X-Amz-Date=20250101&X-Amz-Signature=***",
        ),
        # Names that merely contain a secret word are not secret.
        (
            "https://e.com/?keyword=a&monkey=b&author=c",
            "https://e.com/?keyword=a&monkey=b&author=c",
        ),
        # Repeated names, empty values, names without values, encoded names.
        ("https://e.com/?token=a&token=b", "https://e.com/?token=***&token=***"),
        ("https://e.com/?token=&x=1", "https://e.com/?token=&x=1"),
        ("https://e.com/?token", "https://e.com/?token"),
        ("https://e.com/?api%5Fkey=zz", "https://e.com/?api_key=***"),  # yarl decodes %5F
        ("https://e.com/?q=a%20b&token=c%2Fd", "https://e.com/?q=a%20b&token=***"),
        ("https://e.com/cb#access_token=abc&state=1", "https://e.com/cb#access_token=***&state=1"),
        (
            "http://user:pw@[::1]:9000/x?token=abc",
            "http://***@[::1]:9000/x?token=***",
        ),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_url_secrets_are_the_credentials_in_every_spelling() -> None:
    from yarl import URL

    url = URL("http://user:p%40ss@example.com/x?token=a%20b&page=2")
    found = url_secrets(url)
    assert {"user", "p@ss", "p%40ss", "a%20b", "a b"} <= found
    assert base64.b64encode(b"user:p@ss").decode() in found  # as aiohttp's Basic auth
    assert "2" not in found
    assert "example.com" not in found


def test_header_secrets_take_the_value_and_its_credential() -> None:
    headers = {"AUTHORIZATION": "Bearer s3cret", "X-Trace": "visible", "Cookie": "sid=abc123"}
    found = header_secrets(headers, {"authorization", "cookie"})
    assert found == {"Bearer s3cret", "s3cret", "sid=abc123"}


def test_redactor_cleans_urls_and_known_values_in_free_text() -> None:
    redact = Redactor(["s3cret", "Bearer s3cret", ""])
    text = (
        "ClientResponseError: 400, message='Invalid header', "
        "url=URL('http://user:pw@127.0.0.1:8080/x?token=abc&a=1') "
        "echo: Authorization: Bearer s3cret"
    )
    assert redact(text) == (
        "ClientResponseError: 400, message='Invalid header', "
        "url=URL('http://***@127.0.0.1:8080/x?token=***&a=1') "
        "echo: Authorization: ***"
    )
    assert Redactor()("nothing to hide") == "nothing to hide"
