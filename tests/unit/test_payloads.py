"""Payload validation of the built-in actions, the CreateTask body and webhook classification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from scheduler_daemon.actions.base import ActionRegistry, PayloadInvalid, UnknownAction
from scheduler_daemon.actions.webhook import WebhookPayload, classify
from scheduler_daemon.api.schemas import MAX_DELAY_S, CreateTask
from scheduler_daemon.app import default_actions


@pytest.fixture
def actions() -> ActionRegistry:
    return default_actions()


def invalid_fields(actions: ActionRegistry, name: str, payload: dict[str, Any]) -> list[str]:
    with pytest.raises(PayloadInvalid) as info:
        actions.validate(name, payload)
    fields = [e.field for e in info.value.errors]
    for field in fields:
        assert field in str(info.value)
    return fields


def error_locs(exc: ValidationError) -> list[tuple[int | str, ...]]:
    return [tuple(e["loc"]) for e in exc.errors()]


# --- the registry -----------------------------------------------------------------------


def test_default_actions_are_registered(actions: ActionRegistry) -> None:
    assert actions.names() == ["log", "message", "noop", "sqs", "webhook"]
    assert actions.get("message") is actions.get("log")


def test_unknown_action_raises(actions: ActionRegistry) -> None:
    with pytest.raises(UnknownAction, match="nope"):
        actions.get("nope")
    with pytest.raises(UnknownAction):
        actions.validate("nope", {})
    with pytest.raises(UnknownAction):
        actions.parse("nope", {})


def test_registering_a_name_twice_is_rejected(actions: ActionRegistry) -> None:
    with pytest.raises(ValueError, match="already registered"):
        actions.register(actions.get("noop"))


# --- webhook payloads -------------------------------------------------------------------


def test_webhook_minimal_payload_is_accepted(actions: ActionRegistry) -> None:
    stored = actions.validate("webhook", {"url": "https://example.com/hook"})
    assert stored == {"url": "https://example.com/hook"}
    parsed = actions.parse("webhook", stored)
    assert isinstance(parsed, WebhookPayload)
    assert parsed.method == "POST"
    assert parsed.json_body is None


def test_webhook_missing_url_names_the_field(actions: ActionRegistry) -> None:
    assert invalid_fields(actions, "webhook", {"method": "GET"}) == ["payload.url"]


def test_webhook_bad_method_names_the_field(actions: ActionRegistry) -> None:
    fields = invalid_fields(actions, "webhook", {"url": "https://example.com", "method": "BREW"})
    assert fields == ["payload.method"]


@pytest.mark.parametrize(
    "url", ["ftp://example.com/file", "file:///etc/passwd", "not a url", "example.com"]
)
def test_webhook_rejects_non_http_urls(actions: ActionRegistry, url: str) -> None:
    assert invalid_fields(actions, "webhook", {"url": url}) == ["payload.url"]


@pytest.mark.parametrize("key", ["json", "data"])
def test_webhook_json_and_body_together_are_rejected(actions: ActionRegistry, key: str) -> None:
    with pytest.raises(PayloadInvalid, match="not both"):
        actions.validate("webhook", {"url": "https://example.com", key: {"a": 1}, "body": "x"})


def test_webhook_unknown_field_is_rejected_naming_it(actions: ActionRegistry) -> None:
    fields = invalid_fields(actions, "webhook", {"url": "https://example.com", "colour": "red"})
    assert fields == ["payload.colour"]


def test_webhook_bad_header_value_names_the_header(actions: ActionRegistry) -> None:
    payload = {"url": "https://example.com", "headers": {"X-Count": 3}}
    assert invalid_fields(actions, "webhook", payload) == ["payload.headers.X-Count"]


def test_webhook_data_is_an_alias_of_json(actions: ActionRegistry) -> None:
    via_data = actions.validate(
        "webhook", {"url": "https://example.com/x", "method": "PUT", "data": {"a": [1, 2]}}
    )
    via_json = actions.validate(
        "webhook", {"url": "https://example.com/x", "method": "PUT", "json": {"a": [1, 2]}}
    )
    assert (
        via_data
        == via_json
        == {
            "url": "https://example.com/x",
            "method": "PUT",
            "json": {"a": [1, 2]},
        }
    )
    parsed = actions.parse("webhook", via_data)
    assert isinstance(parsed, WebhookPayload)
    assert parsed.json_body == {"a": [1, 2]}


def test_webhook_body_round_trips(actions: ActionRegistry) -> None:
    stored = actions.validate("webhook", {"url": "http://example.com", "body": "raw text"})
    assert stored["body"] == "raw text"
    parsed = actions.parse("webhook", stored)
    assert isinstance(parsed, WebhookPayload)
    assert parsed.body == "raw text"
    assert parsed.json_body is None


# --- log / message / noop ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["log", "message"])
def test_log_accepts_extra_fields(actions: ActionRegistry, name: str) -> None:
    stored = actions.validate(name, {"message": "hello", "level": "warning", "user": 7})
    assert stored == {"message": "hello", "level": "warning", "user": 7}


def test_log_bad_level_names_the_field(actions: ActionRegistry) -> None:
    assert invalid_fields(actions, "log", {"message": "x", "level": "loud"}) == ["payload.level"]


def test_noop_accepts_anything(actions: ActionRegistry) -> None:
    assert actions.validate("noop", {}) == {}
    assert actions.validate("noop", {"a": 1, "b": {"c": [True]}}) == {"a": 1, "b": {"c": [True]}}


# --- CreateTask ---------------------------------------------------------------------------


def test_create_task_defaults() -> None:
    body = CreateTask.model_validate({"action": "noop"})
    assert body.payload == {}
    assert body.run_at is None
    assert body.delay_s is None
    assert body.queue == "default"
    assert body.max_attempts is None


def test_naive_run_at_is_rejected_naming_run_at() -> None:
    with pytest.raises(ValidationError) as info:
        CreateTask.model_validate({"action": "noop", "run_at": "2030-01-01T12:00:00"})
    assert error_locs(info.value) == [("run_at",)]


@pytest.mark.parametrize("key", ["run_at", "runAt", "executeAt"])
def test_run_at_spellings_are_accepted(key: str) -> None:
    body = CreateTask.model_validate({"action": "noop", key: "2030-01-01T12:00:00+02:00"})
    assert body.run_at == datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    assert body.run_at.utcoffset() == timedelta(hours=2)


def test_run_at_with_z_suffix_is_accepted() -> None:
    body = CreateTask.model_validate({"action": "noop", "runAt": "2030-01-01T00:00:00Z"})
    assert body.run_at == datetime(2030, 1, 1, tzinfo=UTC)


def test_run_at_and_delay_together_are_rejected() -> None:
    with pytest.raises(ValidationError, match="not both"):
        CreateTask.model_validate(
            {"action": "noop", "run_at": "2030-01-01T00:00:00Z", "delay_s": 5}
        )


def test_delay_alone_is_accepted() -> None:
    assert CreateTask.model_validate({"action": "noop", "delay_s": 2.5}).delay_s == 2.5


@pytest.mark.parametrize("delay", [-1, -0.001, MAX_DELAY_S + 1])
def test_delay_out_of_range_is_rejected(delay: float) -> None:
    with pytest.raises(ValidationError) as info:
        CreateTask.model_validate({"action": "noop", "delay_s": delay})
    assert error_locs(info.value) == [("delay_s",)]


def test_unknown_field_is_rejected_naming_it() -> None:
    with pytest.raises(ValidationError) as info:
        CreateTask.model_validate({"action": "noop", "priorty": 3})
    assert error_locs(info.value) == [("priorty",)]
    assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("action", ["", "has space", "semi;colon", "x" * 101])
def test_bad_action_names_are_rejected(action: str) -> None:
    with pytest.raises(ValidationError) as info:
        CreateTask.model_validate({"action": action})
    assert error_locs(info.value) == [("action",)]


def test_seed_000_shorthand_becomes_a_webhook() -> None:
    body = CreateTask.model_validate(
        {
            "executeAt": "2030-05-01T08:30:00+00:00",
            "url": "https://example.com/callback",
            "method": "PUT",
            "data": {"order": 42},
        }
    )
    assert body.action == "webhook"
    assert body.payload == {
        "url": "https://example.com/callback",
        "method": "PUT",
        "data": {"order": 42},
    }
    assert body.run_at == datetime(2030, 5, 1, 8, 30, tzinfo=UTC)


def test_seed_000_shorthand_payload_validates_as_webhook(actions: ActionRegistry) -> None:
    body = CreateTask.model_validate({"url": "https://example.com/cb", "data": {"k": "v"}})
    stored = actions.validate(body.action, body.payload)
    assert stored == {"url": "https://example.com/cb", "json": {"k": "v"}}


def test_shorthand_does_not_apply_when_action_is_given() -> None:
    with pytest.raises(ValidationError) as info:
        CreateTask.model_validate({"action": "noop", "url": "https://example.com"})
    assert error_locs(info.value) == [("url",)]


# --- webhook status classification -------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_ok(status: int) -> None:
    assert classify(status) == (True, False)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_timeouts_throttling_and_5xx_are_retryable(status: int) -> None:
    assert classify(status) == (False, True)


@pytest.mark.parametrize("status", [300, 304, 400, 401, 403, 404, 409, 410, 422])
def test_other_statuses_are_not_retryable(status: int) -> None:
    assert classify(status) == (False, False)
