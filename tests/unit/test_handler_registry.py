"""Python handlers: the decorator's checks, loading modules and entry points into an action
registry, payload validation, and what HandlerAction makes of a handler's return value."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import BaseModel

import scheduler_daemon
from scheduler_daemon import handlers
from scheduler_daemon.actions.base import (
    ActionContext,
    ActionRegistry,
    Fail,
    PayloadInvalid,
    Retry,
)
from scheduler_daemon.app import build_actions, default_actions
from scheduler_daemon.handlers import (
    ENTRY_POINT_GROUP,
    HandlerAction,
    HandlerDefinitions,
    HandlerLoadError,
    handler,
    load_handlers,
)
from scheduler_daemon.isolation import TransactionUnavailable
from scheduler_daemon.settings import HandlersSettings, Settings

GUARD_S = 20.0
EXAMPLE_NAMES = ["attendance.merge_pools", "billing.charge", "newsletter.send_weekly"]


class Empty(BaseModel):
    pass


class Numbers(BaseModel):
    n: int


def _is_example(module: str) -> bool:
    return module == "examples" or module.startswith("examples.")


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[HandlerDefinitions]:
    """An empty module-level definition registry, with the example modules unimported so that
    loading them runs their decorators again; everything is put back afterwards. This keeps the
    tests independent of which modules earlier tests (or other test files) imported."""
    empty = HandlerDefinitions()
    monkeypatch.setattr(handlers, "definitions", empty)
    for module in [m for m in sys.modules if _is_example(m)]:
        monkeypatch.delitem(sys.modules, module)
    before = set(sys.modules)
    yield empty
    for module in set(sys.modules) - before:
        if _is_example(module) or module.startswith("handler_test_"):
            del sys.modules[module]


@pytest.fixture
def own() -> HandlerDefinitions:
    return HandlerDefinitions()


@asynccontextmanager
async def no_transaction() -> AsyncIterator[None]:
    raise AssertionError("these handlers do not open a transaction")
    yield  # pragma: no cover


def context(action: str = "test.action", attempt: int = 1) -> ActionContext:
    return ActionContext(
        task_id=uuid.uuid4(),
        attempt=attempt,
        max_attempts=3,
        action=action,
        log=structlog.get_logger(),
        _transaction=no_transaction,
    )


# --- the public API ---------------------------------------------------------------------


def test_the_package_exports_the_handler_api() -> None:
    assert scheduler_daemon.handler is handler
    assert scheduler_daemon.HandlerContext is ActionContext
    assert scheduler_daemon.Retry is Retry
    assert scheduler_daemon.Fail is Fail


# --- the decorator ----------------------------------------------------------------------


def test_decorator_records_the_definition_and_returns_the_function(
    own: HandlerDefinitions,
) -> None:
    async def ping(ctx: ActionContext, payload: Numbers) -> int:
        return payload.n

    decorated = handler("tests.ping", payload=Numbers, registry=own)(ping)

    assert decorated is ping
    assert own.names() == ["tests.ping"]
    definition = own.get("tests.ping")
    assert definition.function is ping
    assert definition.payload_model is Numbers


def test_decorator_uses_the_module_registry_by_default(fresh: HandlerDefinitions) -> None:
    @handler("tests.default_registry", payload=Empty)
    async def run(ctx: ActionContext, payload: Empty) -> None:
        return None

    assert fresh.names() == ["tests.default_registry"]


def test_a_duplicate_name_is_rejected(own: HandlerDefinitions) -> None:
    @handler("tests.twice", payload=Empty, registry=own)
    async def first(ctx: ActionContext, payload: Empty) -> None:
        return None

    async def second(ctx: ActionContext, payload: Empty) -> None:
        return None

    with pytest.raises(ValueError, match=r"'tests\.twice'.*already defined") as info:
        handler("tests.twice", payload=Empty, registry=own)(second)
    assert "first" in str(info.value)
    assert own.get("tests.twice").function is first


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Billing.charge",
        "1billing",
        "_billing",
        "billing..charge",
        "billing.",
        ".billing",
        "billing-charge",
        "billing charge",
        "billing/charge",
        "a" * 101,
    ],
)
def test_a_bad_name_is_rejected(name: str, own: HandlerDefinitions) -> None:
    with pytest.raises(ValueError, match="handler name") as info:
        handler(name, payload=Empty, registry=own)
    assert repr(name) in str(info.value)
    assert len(own) == 0


@pytest.mark.parametrize("name", ["a", "billing.charge", "a1_b.2.c_", "a" * 100])
def test_good_names_are_accepted(name: str, own: HandlerDefinitions) -> None:
    @handler(name, payload=Empty, registry=own)
    async def run(ctx: ActionContext, payload: Empty) -> None:
        return None

    assert own.names() == [name]


@pytest.mark.parametrize("name", ["webhook", "log", "message", "noop", "sqs"])
def test_built_in_action_names_are_reserved(name: str, own: HandlerDefinitions) -> None:
    with pytest.raises(ValueError, match="reserved"):
        handler(name, payload=Empty, registry=own)
    assert len(own) == 0


def test_a_plain_def_is_accepted_and_runs_in_a_thread(own: HandlerDefinitions) -> None:
    def blocking(ctx: ActionContext, payload: Empty) -> None:
        return None

    assert handler("tests.sync", payload=Empty, registry=own)(blocking) is blocking
    assert own.get("tests.sync").isolation == "thread"


async def _coroutine(ctx: ActionContext, payload: BaseModel) -> None:
    return None


def _function(ctx: ActionContext, payload: BaseModel) -> None:
    return None


@pytest.mark.parametrize(
    ("function", "isolation", "where"),
    [
        (_coroutine, None, "none"),
        (_coroutine, "none", "none"),
        (_coroutine, "thread", "thread"),
        (_coroutine, "process", "process"),
        (_function, None, "thread"),
        (_function, "thread", "thread"),
        (_function, "process", "process"),
    ],
)
def test_isolation_defaults_to_the_kind_of_function(
    own: HandlerDefinitions, function: Any, isolation: Any, where: str
) -> None:
    handler("tests.where", payload=Empty, isolation=isolation, registry=own)(function)
    assert own.get("tests.where").isolation == where


def test_an_unknown_isolation_is_rejected(own: HandlerDefinitions) -> None:
    with pytest.raises(ValueError, match=r"'tests\.iso'.*'none', 'thread', 'process'.*'threads'"):
        handler("tests.iso", payload=Empty, isolation="threads", registry=own)  # type: ignore[arg-type]
    assert len(own) == 0


def test_a_plain_def_cannot_run_on_the_event_loop(own: HandlerDefinitions) -> None:
    decorate = handler("tests.on_loop", payload=Empty, isolation="none", registry=own)
    with pytest.raises(TypeError, match=r"'tests\.on_loop'.*plain def.*event loop"):
        decorate(_function)
    assert len(own) == 0


def test_a_process_handler_must_be_importable_by_name(own: HandlerDefinitions) -> None:
    async def local(ctx: ActionContext, payload: Empty) -> None:
        return None

    class LocalModel(BaseModel):
        pass

    with pytest.raises(TypeError, match=r"'tests\.local'.*function must be defined at the top"):
        handler("tests.local", payload=Empty, isolation="process", registry=own)(local)
    with pytest.raises(TypeError, match=r"payload model must be defined at the top level"):
        handler("tests.local", payload=LocalModel, isolation="process", registry=own)(_function)
    assert len(own) == 0


def test_the_payload_must_be_a_pydantic_model(own: HandlerDefinitions) -> None:
    with pytest.raises(TypeError, match="pydantic model"):
        handler("tests.dict_payload", payload=dict, registry=own)  # type: ignore[type-var]


# --- loading ----------------------------------------------------------------------------


def test_load_handlers_imports_a_module_and_registers_its_handlers(
    fresh: HandlerDefinitions,
) -> None:
    registry = default_actions()

    names = load_handlers(registry, ["examples.attendance"])

    assert names == EXAMPLE_NAMES
    assert fresh.names() == EXAMPLE_NAMES
    assert registry.names() == sorted(["log", "message", "noop", "sqs", "webhook", *EXAMPLE_NAMES])
    from examples.attendance import MergePoolsPayload, merge_pools

    action = registry.get("attendance.merge_pools")
    assert isinstance(action, HandlerAction)
    assert action.name == "attendance.merge_pools"
    assert action.payload_model is MergePoolsPayload
    assert action.definition.function is merge_pools


def test_load_handlers_is_idempotent_per_registry(fresh: HandlerDefinitions) -> None:
    registry = ActionRegistry()
    first = load_handlers(registry, ["examples.attendance"])
    actions = {name: registry.get(name) for name in first}

    again = load_handlers(registry, ["examples.attendance"])

    assert again == first == EXAMPLE_NAMES
    assert all(registry.get(name) is action for name, action in actions.items())
    # Another registry gets its own actions for the same definitions.
    other = ActionRegistry()
    assert load_handlers(other, []) == EXAMPLE_NAMES
    assert other.get("billing.charge") is not registry.get("billing.charge")


def test_build_actions_registers_the_configured_modules(fresh: HandlerDefinitions) -> None:
    settings = Settings(handlers=HandlersSettings(modules=["examples.attendance"]))
    registry = build_actions(settings)
    assert set(EXAMPLE_NAMES) <= set(registry.names())
    assert {"webhook", "log", "message", "noop"} <= set(registry.names())


def test_a_name_taken_by_another_action_is_an_error(own: HandlerDefinitions) -> None:
    @handler("tests.taken", payload=Empty, registry=own)
    async def run(ctx: ActionContext, payload: Empty) -> None:
        return None

    elsewhere = HandlerDefinitions()
    handler("tests.taken", payload=Empty, registry=elsewhere)(run)
    registry = ActionRegistry()
    load_handlers(registry, [], known=elsewhere)

    with pytest.raises(ValueError, match=r"'tests\.taken'.*already registered"):
        load_handlers(registry, [], known=own)


def test_payload_validation_names_the_field(fresh: HandlerDefinitions) -> None:
    registry = ActionRegistry()
    load_handlers(registry, ["examples.attendance"])

    with pytest.raises(PayloadInvalid) as info:
        registry.validate("attendance.merge_pools", {"event_id": 7, "pools": ["only-one"]})
    assert [e.field for e in info.value.errors] == ["payload.pools"]
    assert "payload.pools" in str(info.value)

    with pytest.raises(PayloadInvalid) as info:
        registry.validate("attendance.merge_pools", {"event_id": 0, "pools": ["a", "b"]})
    assert [e.field for e in info.value.errors] == ["payload.event_id"]

    stored = registry.validate("attendance.merge_pools", {"event_id": 7, "pools": ["a", "b"]})
    assert stored == {"event_id": 7, "pools": ["a", "b"]}


def test_an_unknown_module_is_named_in_the_error(fresh: HandlerDefinitions) -> None:
    registry = ActionRegistry()
    with pytest.raises(HandlerLoadError, match=r"'examples\.no_such_module'") as info:
        load_handlers(registry, ["examples.attendance", "examples.no_such_module"])
    assert isinstance(info.value, ImportError)
    assert "ModuleNotFoundError" in str(info.value)


def test_a_module_that_fails_on_import_is_named_in_the_error(
    fresh: HandlerDefinitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"handler_test_broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("raise RuntimeError('no database settings')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(HandlerLoadError) as info:
        load_handlers(ActionRegistry(), [module])
    assert repr(module) in str(info.value)
    assert "RuntimeError: no database settings" in str(info.value)


def _distribution(path: Path, module: str, entry_value: str) -> None:
    """A minimal installed distribution on ``path`` advertising one handler entry point."""
    dist = path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nping = {entry_value}\n")


def test_entry_point_modules_are_loaded(
    fresh: HandlerDefinitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"handler_test_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from pydantic import BaseModel\n"
        "from scheduler_daemon import handler\n"
        "class Ping(BaseModel):\n"
        "    n: int\n"
        "@handler('plugin.ping', payload=Ping)\n"
        "async def ping(ctx, payload):\n"
        "    return {'n': payload.n}\n"
    )
    _distribution(tmp_path, module, module)
    monkeypatch.syspath_prepend(str(tmp_path))

    registry = ActionRegistry()
    assert load_handlers(registry, []) == ["plugin.ping"]
    assert registry.validate("plugin.ping", {"n": "3"}) == {"n": 3}


def test_a_broken_entry_point_is_named_in_the_error(
    fresh: HandlerDefinitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"handler_test_missing_{uuid.uuid4().hex[:8]}"
    _distribution(tmp_path, module, f"{module}.gone")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(HandlerLoadError) as info:
        load_handlers(ActionRegistry(), [])
    message = str(info.value)
    assert f"'{module}.gone'" in message
    assert "entry point 'ping'" in message
    assert ENTRY_POINT_GROUP in message


# --- running ----------------------------------------------------------------------------


def _action(own: HandlerDefinitions, name: str, returns: Any) -> HandlerAction:
    @handler(name, payload=Empty, registry=own)
    async def run(ctx: ActionContext, payload: Empty) -> Any:
        return returns

    return HandlerAction.of(own.get(name))


async def test_the_return_value_becomes_the_result(own: HandlerDefinitions) -> None:
    seen: list[tuple[ActionContext, Numbers]] = []

    @handler("tests.double", payload=Numbers, registry=own)
    async def double(ctx: ActionContext, payload: Numbers) -> dict[str, Any]:
        seen.append((ctx, payload))
        return {"n": payload.n * 2, "tags": ("a", "b")}

    action = HandlerAction.of(own.get("tests.double"))
    ctx = context("tests.double")
    payload = Numbers(n=21)

    result = await action.run(payload, ctx)

    assert result.ok
    assert result.result == {"n": 42, "tags": ["a", "b"]}
    assert seen == [(ctx, payload)]


@pytest.mark.parametrize(
    ("returns", "stored"),
    [
        (None, None),
        (7, 7),
        ("done", "done"),
        ([1, {"a": None}], [1, {"a": None}]),
        (Numbers(n=1), {"n": 1}),
    ],
)
async def test_json_values_and_models_are_results(
    own: HandlerDefinitions, returns: Any, stored: Any
) -> None:
    result = await _action(own, "tests.value", returns).run(Empty(), context())
    assert result.ok, result
    assert result.result == stored


@pytest.mark.parametrize(
    ("returns", "reason"),
    [
        ({"when": object()}, "not JSON-serialisable"),
        ({1, 2}, "not JSON-serialisable"),
        ({"ratio": math.nan}, "not JSON-serialisable"),
        ({"text": "a\x00b"}, "NUL"),
    ],
)
async def test_a_value_that_cannot_be_stored_fails_without_retry(
    own: HandlerDefinitions, returns: Any, reason: str
) -> None:
    result = await _action(own, "tests.bad_value", returns).run(Empty(), context())
    assert not result.ok
    assert not result.retryable
    assert result.error is not None
    assert reason in result.error
    assert result.result is None


async def test_a_backslash_before_u0000_is_not_a_nul(own: HandlerDefinitions) -> None:
    result = await _action(own, "tests.backslash", {"path": "C:\\u0000"}).run(Empty(), context())
    assert result.ok, result
    assert result.result == {"path": "C:\\u0000"}


@pytest.mark.parametrize(
    "exc", [Retry("busy", after=2.5), Fail("card declined"), RuntimeError("bug")]
)
async def test_exceptions_reach_the_executor(own: HandlerDefinitions, exc: Exception) -> None:
    @handler("tests.raises", payload=Empty, registry=own)
    async def run(ctx: ActionContext, payload: Empty) -> None:
        raise exc

    action = HandlerAction.of(own.get("tests.raises"))
    with pytest.raises(type(exc)) as info:
        await action.run(Empty(), context())
    assert info.value is exc


# --- running in a thread ------------------------------------------------------------------


async def test_a_sync_handler_runs_in_a_handler_thread(own: HandlerDefinitions) -> None:
    @handler("tests.threaded", payload=Numbers, registry=own)
    def threaded(ctx: ActionContext, payload: Numbers) -> dict[str, Any]:
        return {"n": payload.n, "thread": threading.current_thread().name}

    result = await HandlerAction.of(own.get("tests.threaded")).run(Numbers(n=4), context())

    assert result.ok, result
    assert result.result["n"] == 4
    assert result.result["thread"].startswith("handler-")


async def test_an_async_handler_may_run_in_a_thread_too(own: HandlerDefinitions) -> None:
    @handler("tests.async_threaded", payload=Empty, isolation="thread", registry=own)
    async def threaded(ctx: ActionContext, payload: Empty) -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    result = await HandlerAction.of(own.get("tests.async_threaded")).run(Empty(), context())

    assert result.ok, result
    assert result.result.startswith("handler-")


async def test_a_sync_handler_raises_retry_and_cannot_open_a_transaction(
    own: HandlerDefinitions,
) -> None:
    @handler("tests.sync_retry", payload=Empty, registry=own)
    def retry(ctx: ActionContext, payload: Empty) -> None:
        raise Retry("busy", after=1.0)

    @handler("tests.sync_tx", payload=Empty, registry=own)
    def transaction(ctx: ActionContext, payload: Empty) -> None:
        ctx.transaction()

    with pytest.raises(Retry, match="busy"):
        await HandlerAction.of(own.get("tests.sync_retry")).run(Empty(), context())
    with pytest.raises(TransactionUnavailable, match=r"runs in a thread.*async def"):
        await HandlerAction.of(own.get("tests.sync_tx")).run(Empty(), context())


async def test_a_cancelled_sync_handler_is_abandoned_and_its_result_ignored(
    own: HandlerDefinitions,
) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    @handler("tests.stuck", payload=Empty, registry=own)
    def stuck(ctx: ActionContext, payload: Empty) -> str:
        started.set()
        release.wait()
        finished.set()
        return "too late"

    run = asyncio.create_task(HandlerAction.of(own.get("tests.stuck")).run(Empty(), context()))
    assert await asyncio.to_thread(started.wait, GUARD_S)
    run.cancel()  # the executor's timeout does this
    with pytest.raises(asyncio.CancelledError):
        await run
    assert not finished.is_set()  # a thread cannot be stopped: it runs on, abandoned
    release.set()
    assert await asyncio.to_thread(finished.wait, GUARD_S)


# --- running in a process -----------------------------------------------------------------

ISOLATED_MODULE = """
import asyncio
import os

from pydantic import BaseModel

from scheduler_daemon import Fail, Retry, handler


class Numbers(BaseModel):
    n: int


@handler("iso.double", payload=Numbers, isolation="process")
def double(ctx, payload):
    return {"n": payload.n * 2, "pid": os.getpid(), "task_id": str(ctx.task_id)}


@handler("iso.retry", payload=Numbers, isolation="process")
async def retry(ctx, payload):
    raise Retry("busy", after=payload.n)


@handler("iso.fail", payload=Numbers, isolation="process")
def fail(ctx, payload):
    raise Fail("declined")


@handler("iso.boom", payload=Numbers, isolation="process")
async def boom(ctx, payload):
    raise ValueError(f"boom {payload.n}")


@handler("iso.bad_result", payload=Numbers, isolation="process")
def bad_result(ctx, payload):
    return {"when": object()}


@handler("iso.transaction", payload=Numbers, isolation="process")
async def transaction(ctx, payload):
    async with ctx.transaction():
        pass


@handler("iso.hang", payload=Numbers, isolation="process")
async def hang(ctx, payload):
    ctx.log.info("hanging", n=payload.n)
    await asyncio.Event().wait()
"""


class Recorder:
    """A logger that keeps what it was given; ``seen`` waits for an event name."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, Any, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def _record(self, level: str, event: Any, **kw: Any) -> None:
        self.lines.append((level, event, kw))
        self._changed.set()

    def debug(self, event: Any = None, **kw: Any) -> None:
        self._record("debug", event, **kw)

    def info(self, event: Any = None, **kw: Any) -> None:
        self._record("info", event, **kw)

    def warning(self, event: Any = None, **kw: Any) -> None:
        self._record("warning", event, **kw)

    def error(self, event: Any = None, **kw: Any) -> None:
        self._record("error", event, **kw)

    def critical(self, event: Any = None, **kw: Any) -> None:
        self._record("critical", event, **kw)

    async def seen(self, event: str) -> dict[str, Any]:
        async with asyncio.timeout(GUARD_S):
            while True:
                for _level, name, kw in self.lines:
                    if name == event:
                        return kw
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def isolated(
    fresh: HandlerDefinitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, HandlerAction]:
    """The handlers of ISOLATED_MODULE, loaded from a module of its own (which the handler
    processes import by name)."""
    module = f"handler_test_isolated_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(ISOLATED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ActionRegistry()
    names = load_handlers(registry, [module])
    actions = {}
    for name in names:
        action = registry.get(name)
        assert isinstance(action, HandlerAction)
        actions[name] = action
    return actions


def _ctx(log: Any = None) -> ActionContext:
    return ActionContext(
        task_id=uuid.uuid4(),
        attempt=1,
        max_attempts=3,
        action="iso",
        log=log or Recorder(),
        _transaction=no_transaction,
    )


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_an_isolated_handler_returns_its_result_from_another_process(
    isolated: dict[str, HandlerAction],
) -> None:
    action = isolated["iso.double"]
    await action.start()
    ctx = _ctx()

    result = await action.run(action.payload_model.model_validate({"n": 21}), ctx)

    assert result.ok, result
    assert result.result["n"] == 42
    assert result.result["task_id"] == str(ctx.task_id)
    assert result.result["pid"] != os.getpid()
    assert _gone(result.result["pid"])


async def test_retry_and_fail_come_back_from_the_process(
    isolated: dict[str, HandlerAction],
) -> None:
    payload = isolated["iso.retry"].payload_model.model_validate({"n": 3})
    with pytest.raises(Retry) as retry:
        await isolated["iso.retry"].run(payload, _ctx())
    assert (retry.value.reason, retry.value.after_s) == ("busy", 3.0)
    with pytest.raises(Fail, match="declined"):
        await isolated["iso.fail"].run(payload, _ctx())


async def test_an_exception_in_the_process_fails_the_attempt_with_its_description(
    isolated: dict[str, HandlerAction],
) -> None:
    log = Recorder()
    payload = isolated["iso.boom"].payload_model.model_validate({"n": 5})

    result = await isolated["iso.boom"].run(payload, _ctx(log))

    assert (result.ok, result.retryable, result.error) == (False, True, "ValueError: boom 5")
    crashed = await log.seen("action_crashed")
    assert "ValueError: boom 5" in crashed["traceback"]


async def test_an_unstorable_result_and_a_transaction_fail_clearly_in_a_process(
    isolated: dict[str, HandlerAction],
) -> None:
    payload = isolated["iso.bad_result"].payload_model.model_validate({"n": 1})

    bad = await isolated["iso.bad_result"].run(payload, _ctx())
    transaction = await isolated["iso.transaction"].run(payload, _ctx())

    assert (bad.ok, bad.retryable) == (False, False)
    assert "not JSON-serialisable" in (bad.error or "")
    assert not transaction.ok
    assert (transaction.error or "").startswith("TransactionUnavailable: ")
    assert "isolation='process'" in (transaction.error or "")


async def test_a_cancelled_isolated_handler_is_killed_and_its_log_relayed(
    isolated: dict[str, HandlerAction],
) -> None:
    log = Recorder()
    payload = isolated["iso.hang"].payload_model.model_validate({"n": 9})
    run = asyncio.create_task(isolated["iso.hang"].run(payload, _ctx(log)))

    hanging = await log.seen("hanging")  # relayed from the process, bound fields kept
    run.cancel()  # the executor's timeout does this
    with pytest.raises(asyncio.CancelledError):
        await run

    assert hanging["n"] == 9
    assert hanging["handler_pid"] != os.getpid()
    assert _gone(hanging["handler_pid"])
