"""The wake-up message format and the publisher's pure decisions."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scheduler_daemon.aws.clients import queue_arn_from_url, queue_url_from_arn
from scheduler_daemon.aws.codec import (
    MAX_BODY_CHARS,
    MAX_SERIES,
    MalformedMessage,
    at_expression,
    delay_seconds,
    delivery,
    message_body,
    parse_body,
    schedule_name,
)
from scheduler_daemon.engine.wakeups import Malformed, WakeUp


def test_message_round_trip_carries_only_id_and_series() -> None:
    task_id = uuid.uuid4()
    body = message_body(task_id, 3)
    assert json.loads(body) == {"task_id": str(task_id), "series": 3}
    assert parse_body(body) == (task_id, 3)


def test_a_received_message_is_a_wakeup_or_malformed_without_its_body() -> None:
    task_id = uuid.uuid4()
    good: Any = {"ReceiptHandle": "r1", "MessageId": "m1", "Body": message_body(task_id, 2)}
    assert delivery(good) == WakeUp("r1", task_id, 2)
    bad: Any = {"ReceiptHandle": "r2", "MessageId": "m2", "Body": "{secret"}
    assert delivery(bad) == Malformed("r2", "m2", "not JSON", len("{secret"))


ID = str(uuid.UUID(int=1))


def wakeup(task_id: Any = ID, series: Any = 1) -> str:
    return json.dumps({"task_id": task_id, "series": series})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("", id="empty"),
        pytest.param("[]", id="array"),
        pytest.param("{}", id="empty-object"),
        pytest.param("{not json", id="not-json"),
        pytest.param("null", id="null"),
        pytest.param('"a string"', id="json-string"),
        pytest.param(wakeup(task_id="x"), id="id-not-a-uuid"),
        pytest.param(wakeup(task_id=1), id="id-an-int"),
        pytest.param(wakeup(task_id=None), id="id-null"),
        pytest.param(wakeup(task_id=[ID]), id="id-a-list"),
        pytest.param(wakeup(task_id=ID.replace("-", "")), id="id-without-hyphens"),
        pytest.param(wakeup(task_id=f"{{{ID}}}"), id="id-in-braces"),
        pytest.param(wakeup(task_id=f"urn:uuid:{ID}"), id="id-as-urn"),
        pytest.param(wakeup(task_id=f" {ID}"), id="id-with-space"),
        pytest.param(json.dumps({"task_id": ID}), id="no-series"),
        pytest.param(json.dumps({"series": 1}), id="no-id"),
        pytest.param(wakeup(series=0), id="series-zero"),
        pytest.param(wakeup(series=-1), id="series-negative"),
        pytest.param(wakeup(series=-(2**31)), id="series-int32-min"),
        pytest.param(wakeup(series=2**31), id="series-past-int32"),
        pytest.param(wakeup(series=4294967296), id="series-2-to-the-32"),
        pytest.param(wakeup(series=10**100), id="series-googol"),
        pytest.param(f'{{"task_id": "{ID}", "series": {"9" * 5000}}}', id="series-5000-digits"),
        pytest.param(wakeup(series=True), id="series-true"),
        pytest.param(wakeup(series=False), id="series-false"),
        pytest.param(wakeup(series=1.0), id="series-float"),
        pytest.param(wakeup(series=1.5), id="series-fraction"),
        pytest.param(f'{{"task_id": "{ID}", "series": 1e3}}', id="series-exponent"),
        pytest.param(f'{{"task_id": "{ID}", "series": NaN}}', id="series-nan"),
        pytest.param(f'{{"task_id": "{ID}", "series": Infinity}}', id="series-infinity"),
        pytest.param(wakeup(series="1"), id="series-string"),
        pytest.param(wakeup(series=None), id="series-null"),
        pytest.param(wakeup(series=[1]), id="series-list"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="lists-100000-deep"),
        pytest.param('{"a":' * 50_000 + "1" + "}" * 50_000, id="objects-50000-deep"),
        pytest.param("[" * 100_000, id="unclosed-lists-100000-deep"),
        pytest.param(wakeup(task_id="a" * 300_000), id="very-long-id"),
        pytest.param(" " * (MAX_BODY_CHARS + 1) + wakeup(), id="valid-but-too-long"),
        pytest.param('{"task_id": "\ud800", "series": 1}', id="lone-surrogate"),
        pytest.param('{"task_id": "\\ud800", "series": 1}', id="escaped-lone-surrogate"),
        pytest.param("\udcff\x00\ufffd", id="binary-ish-text"),
    ],
)
def test_malformed_bodies_are_refused(body: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_body(body)


def test_the_refusal_never_quotes_the_body() -> None:
    secret = "s3cr3t-value-from-somewhere-else"
    for body in (secret, wakeup(task_id=secret), wakeup(series=secret), "[" * 5000 + secret):
        with pytest.raises(MalformedMessage) as refused:
            parse_body(body)
        assert secret not in str(refused.value)


@pytest.mark.parametrize("series", [1, 2, 2**31 - 1])
def test_series_within_the_int_column_parse(series: int) -> None:
    assert parse_body(wakeup(series=series)) == (uuid.UUID(ID), series)
    assert MAX_SERIES == 2**31 - 1


def test_unknown_keys_and_upper_case_ids_are_accepted() -> None:
    body = json.dumps({"task_id": ID.upper(), "series": 7, "kind": "wakeup"})
    assert parse_body(body) == (uuid.UUID(ID), 7)


def check_parse(body: str) -> None:
    """The parser's contract: an id and an in-range series, or MalformedMessage; nothing
    else ever escapes."""
    try:
        task_id, series = parse_body(body)
    except MalformedMessage:
        return
    assert isinstance(task_id, uuid.UUID)
    assert type(series) is int
    assert 1 <= series <= MAX_SERIES


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.uuids().map(str)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | json_values
series_values = (
    st.integers(min_value=-(2**40), max_value=2**40)
    | st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32, -(2**31), 2**63, 10**30])
    | json_values
)


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    depth = draw(st.integers(min_value=1, max_value=200_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    closed = draw(st.booleans())
    return opener * depth + "1" + (closer * depth if closed else "")


long_strings = st.builds(
    lambda text, n: text * n, st.text(min_size=1, max_size=3), st.integers(0, 100_000)
)
wakeup_like = st.builds(
    lambda task_id, series, extra: json.dumps({"task_id": task_id, "series": series, **extra}),
    ids,
    series_values,
    st.dictionaries(st.sampled_from(["kind", "x", "task"]), json_values, max_size=2),
)
partial = st.builds(
    json.dumps, st.dictionaries(st.sampled_from(["task_id", "series", "other"]), json_values)
)
bodies = (
    st.text()
    | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF))
    | wakeup_like
    | partial
    | json_values.map(json.dumps)
    | deep_nesting()
    | long_strings
)


@given(bodies)
@example("[" * 100_000)
@example('{"task_id": "' + ID + '", "series": 4294967296}')
@example('{"task_id": "' + ID + '", "series": ' + "1" * 5000 + "}")
@example(wakeup(series=True))
def test_any_body_parses_in_range_or_is_malformed(body: str) -> None:
    check_parse(body)


@given(wakeup_like)
def test_wakeup_shaped_bodies_parse_in_range_or_are_malformed(body: str) -> None:
    check_parse(body)


@given(st.uuids(), st.integers(min_value=1, max_value=2**31 - 1))
def test_every_published_message_parses_back(task_id: uuid.UUID, series: int) -> None:
    assert parse_body(message_body(task_id, series)) == (task_id, series)


def test_schedule_name_is_deterministic_and_fits_eventbridge() -> None:
    task_id = uuid.UUID("0b9c7d5e-8a3f-4f7e-9a51-2f3c4d5e6f70")
    assert schedule_name(task_id, 1) == f"task-{task_id}-1"
    assert len(schedule_name(task_id, 2**31 - 1)) <= 64


def test_at_expression_is_utc_and_never_early() -> None:
    oslo = datetime(2026, 3, 29, 3, 30, 0, tzinfo=UTC)
    assert at_expression(oslo) == "at(2026-03-29T03:30:00)"
    assert at_expression(datetime(2026, 1, 1, 23, 59, 59, 1, tzinfo=UTC)) == (
        "at(2026-01-02T00:00:00)"
    )


@pytest.mark.parametrize(
    ("due_in_s", "delay"), [(-5.0, 0), (0.0, 0), (0.9, 0), (1.5, 1), (899.9, 899), (5000.0, 900)]
)
def test_delay_seconds_rounds_down_within_sqs_limit(due_in_s: float, delay: int) -> None:
    assert delay_seconds(due_in_s) == delay


def test_queue_arn_and_url_convert_both_ways() -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/scheduler-tasks"
    arn = queue_arn_from_url(url, "eu-west-1")
    assert arn == "arn:aws:sqs:eu-west-1:123456789012:scheduler-tasks"
    assert queue_url_from_arn(arn, None) == url
    assert queue_url_from_arn(arn, "http://127.0.0.1:5000/") == (
        "http://127.0.0.1:5000/123456789012/scheduler-tasks"
    )
    with pytest.raises(ValueError, match="not an SQS queue ARN"):
        queue_url_from_arn("arn:aws:sns:eu-west-1:1:t", None)
