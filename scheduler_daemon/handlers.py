"""Python handlers: functions registered under a task action name.

A handler is declared with the :func:`handler` decorator, next to the pydantic model that its
payload must satisfy (seed 003: every task definition validates its payload when the task is
created)::

    from pydantic import BaseModel
    from scheduler_daemon import Fail, HandlerContext, Retry, handler

    class MergePoolsPayload(BaseModel):
        event_id: int

    @handler("attendance.merge_pools", payload=MergePoolsPayload)
    async def merge_pools(ctx: HandlerContext, payload: MergePoolsPayload) -> dict[str, int]:
        async with ctx.transaction() as conn:
            ...
        return {"event_id": payload.event_id}

Where a handler runs (``isolation``):

* ``async def`` (default ``"none"``): on the daemon's event loop, shared with every other
  task, the lease bookkeeping and the API. It must not block: no ``time.sleep``, no
  synchronous network or database client, no long computation between awaits (a block over
  ``watchdog.max_loop_lag_s`` is logged as ``event_loop_blocked``, naming the task).
* plain ``def`` (default ``"thread"``): in a thread of a bounded pool, so it may block. At the
  task's timeout the attempt ends ``timed_out``, but a thread cannot be killed: it runs on,
  abandoned, and what it returns is ignored. ``ctx.transaction()`` is not available there
  (the daemon's connections belong to its event loop). ``isolation="thread"`` also runs an
  ``async def`` handler this way, on an event loop of its own in the thread.
* ``isolation="process"`` (``def`` or ``async def``): each attempt in a child process that
  imports the handler's module; killed at the task's timeout, and a crash of the process
  (a segfault, ``os._exit``, a signal) fails the attempt with its exit code (retried). The
  function and its payload model must be defined at the top level of a module, the payload
  and the result travel as JSON, and ``ctx.transaction()`` is not available.

Declaring only records the definition. The daemon imports the modules listed in
``handlers.modules`` and those advertised by the ``scheduler_daemon.handlers`` entry-point
group, then :func:`load_handlers` registers one :class:`HandlerAction` per definition.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from scheduler_daemon.actions.base import ActionContext, ActionRegistry, ActionResult
from scheduler_daemon.isolation import (
    ISOLATIONS,
    Isolation,
    ProcessJob,
    importable_name,
    json_result,
    prepare_processes,
    run_in_process,
    run_in_thread,
)
from scheduler_daemon.logs import get_logger

ENTRY_POINT_GROUP = "scheduler_daemon.handlers"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
MAX_NAME_LENGTH = 100
RESERVED_NAMES = frozenset({"webhook", "log", "message", "noop", "sqs"})


HandlerContext = ActionContext
"""What a handler knows about its attempt: ``task_id``, ``attempt``, ``max_attempts``,
``action``, ``log`` and ``transaction()`` (an ``async def`` handler on the event loop only)."""

PayloadT = TypeVar("PayloadT", bound=BaseModel)
ResultT = TypeVar("ResultT")
HandlerFunction = Callable[[ActionContext, PayloadT], ResultT]
"""A handler: ``async def`` (``ResultT`` is then the coroutine) or a plain ``def``."""

log = get_logger("handlers")


@dataclass(frozen=True, slots=True)
class HandlerDefinition(Generic[PayloadT]):
    name: str
    function: HandlerFunction[PayloadT, Any]
    payload_model: type[PayloadT]
    isolation: Isolation = "none"

    @property
    def origin(self) -> str:
        """``module.qualname`` of the function, for error messages."""
        fn = self.function
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class HandlerDefinitions:
    """Handler definitions by name. The module-level :data:`definitions` is the one the
    decorator fills by default; tests may use their own."""

    def __init__(self) -> None:
        self._by_name: dict[str, HandlerDefinition[Any]] = {}

    def add(self, definition: HandlerDefinition[Any]) -> None:
        existing = self._by_name.get(definition.name)
        if existing is not None:
            raise ValueError(
                f"handler {definition.name!r} is already defined by {existing.origin}; "
                f"{definition.origin} cannot use the same name"
            )
        self._by_name[definition.name] = definition

    def get(self, name: str) -> HandlerDefinition[Any]:
        return self._by_name[name]

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[HandlerDefinition[Any]]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)


definitions = HandlerDefinitions()


def check_name(name: str) -> None:
    """Raise ValueError unless ``name`` can name a handler."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"handler name {name!r} is invalid: use lowercase letters, digits and underscores, "
            "in dot-separated parts that start with a letter (e.g. 'billing.charge')"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"handler name {name!r} is longer than {MAX_NAME_LENGTH} characters")
    if name in RESERVED_NAMES:
        raise ValueError(f"handler name {name!r} is reserved for a built-in action")


def handler(
    name: str,
    *,
    payload: type[PayloadT],
    isolation: Isolation | None = None,
    registry: HandlerDefinitions | None = None,
) -> Callable[[HandlerFunction[PayloadT, ResultT]], HandlerFunction[PayloadT, ResultT]]:
    """Declare a function as the handler of action ``name``; return it unchanged.

    ``payload`` is the pydantic model that a task's payload must satisfy: the API checks it when
    the task is created, and the function receives the parsed model. The function's return
    value (JSON-serialisable, a pydantic model, or None) becomes the task's ``result``. It may
    raise :class:`Retry` (try again, optionally ``after`` a delay) or :class:`Fail` (fail the task
    without further attempts); any other exception fails the attempt and is retried with backoff.

    ``isolation`` says where it runs (see the module docstring): ``"none"`` on the event loop
    (the default of an ``async def``), ``"thread"`` in a thread (the default of a plain
    ``def``), ``"process"`` in a child process of its own for each attempt.
    """
    check_name(name)
    if not (isinstance(payload, type) and issubclass(payload, BaseModel)):
        raise TypeError(f"handler {name!r}: payload must be a pydantic model class")
    if isolation is not None and isolation not in ISOLATIONS:
        raise ValueError(
            f"handler {name!r}: isolation must be one of {', '.join(map(repr, ISOLATIONS))}, "
            f"not {isolation!r}"
        )
    target = definitions if registry is None else registry

    def decorate(
        function: HandlerFunction[PayloadT, ResultT],
    ) -> HandlerFunction[PayloadT, ResultT]:
        label = f"handler {name!r}: {getattr(function, '__qualname__', function)!r}"
        if not callable(function):
            raise TypeError(f"{label} is not a function")
        is_async = inspect.iscoroutinefunction(function)
        where = isolation or ("none" if is_async else "thread")
        if where == "none" and not is_async:
            raise TypeError(
                f"{label} is a plain def: it cannot run on the event loop (isolation='none'); "
                "declare it async def, or leave isolation unset to run it in a thread"
            )
        if where == "process":
            for what, obj in (("function", function), ("payload model", payload)):
                try:
                    importable_name(obj)
                except ValueError:
                    raise TypeError(
                        f"{label}: with isolation='process' the {what} must be defined at the "
                        "top level of a module (the handler process imports it by name)"
                    ) from None
        target.add(HandlerDefinition(name, function, payload, where))
        return function

    return decorate


class HandlerAction:
    """The Action that runs one handler definition.

    The Action protocol declares ``name`` and ``payload_model`` as class attributes, so each
    definition gets its own subclass: build instances with :meth:`of`.
    """

    name: ClassVar[str]
    payload_model: ClassVar[type[BaseModel]]
    definition: ClassVar[HandlerDefinition[Any]]

    @staticmethod
    def of(definition: HandlerDefinition[Any]) -> HandlerAction:
        class Bound(HandlerAction):
            name = definition.name
            payload_model = definition.payload_model

        Bound.definition = definition
        Bound.__name__ = Bound.__qualname__ = f"HandlerAction[{definition.name}]"
        return Bound()

    async def run(self, payload: Any, ctx: ActionContext) -> ActionResult:
        # Retry and Fail propagate to the executor, which turns them into the attempt's
        # outcome; so does any other exception (a retryable failure). The executor's timeout
        # cancels the await: a thread is abandoned then, a process killed.
        definition = self.definition
        if definition.isolation == "process":
            return await run_in_process(self._job(payload, ctx), ctx)
        if definition.isolation == "thread":
            value = await run_in_thread(definition.function, ctx, payload)
        else:
            value = await definition.function(ctx, payload)
        result, error = json_result(value)
        if error is not None:
            return ActionResult.failure(error, retryable=False)
        return ActionResult.success(result=result)

    def _job(self, payload: BaseModel, ctx: ActionContext) -> ProcessJob:
        module, qualname = importable_name(self.definition.function)
        model_module, model_qualname = importable_name(self.definition.payload_model)
        return ProcessJob(
            module=module,
            qualname=qualname,
            model_module=model_module,
            model_qualname=model_qualname,
            payload_json=payload.model_dump_json(by_alias=True),
            task_id=str(ctx.task_id),
            attempt=ctx.attempt,
            max_attempts=ctx.max_attempts,
            action=ctx.action,
        )

    async def start(self) -> None:
        if self.definition.isolation == "process":
            # Started once, off the loop: the first attempt's process then starts quickly.
            await asyncio.to_thread(prepare_processes)

    async def close(self) -> None:
        return None


class HandlerLoadError(ImportError):
    """A handler module or entry point could not be imported; the message names it."""


def import_handler_modules(modules: Sequence[str]) -> None:
    """Import every module in ``modules`` and every ``scheduler_daemon.handlers`` entry point.

    Like ``python -m``, the working directory is importable, so a project's own handler
    modules load without being installed.
    """
    cwd = os.getcwd()
    if modules and cwd not in sys.path:
        sys.path.insert(0, cwd)
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise HandlerLoadError(
                f"cannot import handler module {module!r} (from handlers.modules): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception as exc:
            raise HandlerLoadError(
                f"cannot import handler module {entry_point.value!r} (entry point "
                f"{entry_point.name!r} of group {ENTRY_POINT_GROUP!r}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def load_handlers(
    registry: ActionRegistry,
    modules: Sequence[str],
    *,
    known: HandlerDefinitions | None = None,
) -> list[str]:
    """Import the handler modules, then register a :class:`HandlerAction` for every known
    definition; return the handler names that ``registry`` now runs, sorted.

    Idempotent: a definition already registered in ``registry`` is left as it is. Raises
    :class:`HandlerLoadError` naming the module when an import fails, and ValueError when a
    handler's name is taken by another action.
    """
    try:
        import_handler_modules(modules)
    except HandlerLoadError as exc:
        log.error("handlers_load_failed", error=str(exc))
        raise
    source = definitions if known is None else known
    names = []
    for definition in source:
        if definition.name in registry:
            current = registry.get(definition.name)
            if not (isinstance(current, HandlerAction) and current.definition is definition):
                raise ValueError(
                    f"handler {definition.name!r} ({definition.origin}): the name is already "
                    "registered for another action"
                )
        else:
            registry.register(HandlerAction.of(definition))
        names.append(definition.name)
    return sorted(names)
