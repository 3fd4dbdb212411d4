"""Running a handler away from the event loop: in a thread, or in a process of its own.

The daemon's event loop also claims tasks, records results and serves the API; a handler that
blocks it delays all of that. A plain ``def`` handler therefore runs in a thread
(``run_in_thread``), and a handler declared with ``isolation="process"`` runs each attempt in
a child process (``run_in_process``) that can be killed.

Threads cannot be killed: at the task's timeout the attempt ends ``timed_out`` and the thread
is abandoned (it runs on; whatever it returns is ignored). The threads are daemon threads, so
an abandoned one never keeps the daemon from exiting. A process can be killed: at the timeout
(or when the lease is lost, or the daemon stops) it gets SIGTERM, then SIGKILL after
``TERM_GRACE_S``; a child that dies on its own (a crash, ``os._exit``, a signal) fails the
attempt with its exit code, as a retryable error.

A child process starts from the ``forkserver`` (``spawn`` where there is none): a fresh
interpreter state, not a fork of the daemon with its threads and connections. It imports the
handler's module and looks the function and the payload model up by name; the payload goes
as JSON, and the result (or ``Retry``/``Fail``/an exception's description, or a log line)
comes back as JSON over a pipe. Log lines of the child (structlog) are relayed to the daemon's
log, bound to the attempt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import functools
import importlib
import inspect
import json
import multiprocessing
import multiprocessing.connection
import os
import queue
import re
import signal
import threading
import traceback
import uuid
from collections.abc import Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

import structlog
from pydantic import BaseModel

from scheduler_daemon.actions.base import (
    ActionContext,
    ActionResult,
    Fail,
    Retry,
    TransactionFactory,
)

Isolation = Literal["none", "thread", "process"]
ISOLATIONS: tuple[Isolation, ...] = ("none", "thread", "process")

HANDLER_THREADS = 32  # threads for handlers that run in a thread (abandoned ones included)
TERM_GRACE_S = 1.0  # between SIGTERM and SIGKILL of a handler process

_P = ParamSpec("_P")
_T = TypeVar("_T")

# PostgreSQL's jsonb rejects the escaped NUL character (an odd number of backslashes before
# ``u0000``; an even number is an escaped backslash followed by the text "u0000").
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def json_result(value: Any) -> tuple[Any, str | None]:
    """The handler's return value as it will be stored, or an error saying why it cannot be."""
    if value is None or isinstance(value, (bool, int)):  # stored as they are
        return value, None
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return None, f"the handler returned a value that is not JSON-serialisable: {exc}"
    if _JSON_NUL.search(text):
        return None, "the handler returned a string with a NUL character (\\u0000)"
    return json.loads(text), None


class TransactionUnavailable(RuntimeError):
    """``ctx.transaction()`` called where the daemon's database connections cannot be used."""


IN_A_THREAD = (
    "ctx.transaction() is not available to a handler that runs in a thread (a plain def "
    "handler, or isolation='thread'): the daemon's database connections belong to its event "
    "loop. Declare the handler async def to use it, or open a connection of its own"
)
IN_A_PROCESS = (
    "ctx.transaction() is not available to a handler with isolation='process': the handler "
    "process has no connection to the daemon's database. Open a connection of its own"
)


def unavailable_transaction(reason: str) -> TransactionFactory:
    def refuse() -> AbstractAsyncContextManager[Any]:
        raise TransactionUnavailable(reason)

    return refuse


# -- threads -------------------------------------------------------------------------------


_Work = tuple[concurrent.futures.Future[Any], Callable[[], Any]]


class HandlerThreads(concurrent.futures.Executor):
    """At most ``max_threads`` daemon threads, started as needed and reused.

    Not a ThreadPoolExecutor: its threads are joined when the interpreter exits, so a single
    handler stuck past its timeout (a thread cannot be killed) would keep the daemon from ever
    exiting. Work beyond ``max_threads`` waits in a queue; an attempt that times out while
    waiting is dropped without running.
    """

    def __init__(self, max_threads: int, name: str = "handler") -> None:
        self._max = max_threads
        self._name = name
        self._work: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._work.put((future, functools.partial(fn, *args, **kwargs)))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if self._threads < self._max:
                    self._threads += 1
                    name = f"{self._name}-{self._threads}"
                    threading.Thread(target=self._serve, name=name, daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            future, call = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except Exception as exc:
                    future.set_exception(exc)
                except BaseException as exc:  # SystemExit & co must not reach the event loop
                    future.set_exception(RuntimeError(f"{type(exc).__name__}: {exc}"))
            del future, call
            self._idle.release()


_threads = HandlerThreads(HANDLER_THREADS)


def _call_async(function: Callable[..., Any], *args: Any) -> Any:
    return asyncio.run(function(*args))


async def run_in_thread(function: Callable[..., Any], ctx: ActionContext, payload: Any) -> Any:
    """``function(ctx, payload)`` in a handler thread (an async function on an event loop of
    its own there); its return value. Cancelled (the task's timeout), the thread is abandoned.
    """
    ctx = dataclasses.replace(ctx, _transaction=unavailable_transaction(IN_A_THREAD))
    call: Callable[[], Any]
    if inspect.iscoroutinefunction(function):
        call = functools.partial(_call_async, function, ctx, payload)
    else:
        call = functools.partial(function, ctx, payload)
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_threads, context.run, call)


# -- processes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessJob:
    """Everything a handler process needs, by name: picklable whatever the handler is."""

    module: str
    qualname: str
    model_module: str
    model_qualname: str
    payload_json: str
    task_id: str
    attempt: int
    max_attempts: int
    action: str


def importable_name(obj: Any) -> tuple[str, str]:
    """(module, qualname) by which a child process finds ``obj``; ValueError when it cannot
    (a function or class defined inside a function)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(f"{obj!r} is not defined at the top level of a module")
    return module, qualname


def _mp_context() -> Any:  # a multiprocessing context: forkserver, else spawn
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


_started_server = False


def prepare_processes() -> None:
    """Start the fork server (blocking; call it from a thread), with this module loaded, so
    that an attempt's process starts quickly."""
    global _started_server
    context = _mp_context()
    if context.get_start_method() != "forkserver" or _started_server:
        return
    context.set_forkserver_preload([__name__])
    from multiprocessing import forkserver

    forkserver.ensure_running()
    _started_server = True


async def run_in_process(job: ProcessJob, ctx: ActionContext) -> ActionResult:
    """Run ``job`` in a child process and wait for it without blocking the loop.

    Cancelled (the task's timeout, a lost lease, the daemon stopping), the child is killed
    before the cancellation goes on. ``Retry`` and ``Fail`` raised in the child are raised
    here; any other exception, or the child's death, is a retryable failed attempt.
    """
    mp = _mp_context()
    reader, writer = mp.Pipe(duplex=False)
    process = mp.Process(
        target=_child_main, args=(job, writer), name=f"handler:{job.action}", daemon=True
    )
    try:
        try:
            process.start()
        finally:
            writer.close()  # the child holds the other copy: its exit closes the pipe
        try:
            outcome = await _outcome(reader, process, ctx)
        except asyncio.CancelledError:
            await _reap(process, wait_s=0.0)
            raise
        except BaseException:  # Retry, Fail: the child reported, and is ending
            await _reap(process, wait_s=TERM_GRACE_S)
            raise
        await _reap(process, wait_s=TERM_GRACE_S)
        return outcome
    finally:
        reader.close()
        if not process.is_alive():
            process.close()


async def _outcome(
    reader: multiprocessing.connection.Connection,
    process: multiprocessing.process.BaseProcess,
    ctx: ActionContext,
) -> ActionResult:
    while True:
        message = await _receive(reader)
        if message is None:  # the pipe closed without a result: the child died
            await _exited(process)
            return ActionResult.failure(exit_error(process.exitcode), retryable=True)
        kind = message.get("kind")
        if kind == "log":
            _relay(ctx.log, message.get("record"))
            continue
        if kind == "ok":
            return ActionResult.success(result=message.get("result"))
        if kind == "invalid":
            return ActionResult.failure(str(message.get("error")), retryable=False)
        if kind == "retry":
            raise Retry(str(message.get("reason")), after=message.get("after_s"))
        if kind == "fail":
            raise Fail(str(message.get("reason")))
        error = str(message.get("error"))
        ctx.log.error("action_crashed", error=error, traceback=message.get("traceback"))
        return ActionResult.failure(error, retryable=True)


def exit_error(code: int | None) -> str:
    if code is None:
        return "handler process ended without reporting a result"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"handler process exited with code {code} ({name})"
    return f"handler process exited with code {code}"


def _relay(log: Any, record: Any) -> None:
    """A child's log line, written by the daemon's logger (bound to the attempt)."""
    if not isinstance(record, dict):
        return
    level = str(record.pop("level", "info"))
    event = record.pop("event", None)
    method = getattr(log, level, None)
    if level not in ("debug", "info", "warning", "error", "critical") or method is None:
        method = log.info
    method(event, handler_pid=record.pop("handler_pid", None), **record)


async def _readable(fd: int) -> None:
    """Resolve once ``fd`` can be read (data, or the end of the pipe)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _receive(reader: multiprocessing.connection.Connection) -> dict[str, Any] | None:
    """The child's next message; None at the end of the pipe."""
    await _readable(reader.fileno())
    try:
        data = reader.recv_bytes()
    except (EOFError, OSError):  # closed, or cut in the middle of a message
        return None
    message = json.loads(data)
    return message if isinstance(message, dict) else {"kind": "error", "error": repr(message)}


async def _exited(process: multiprocessing.process.BaseProcess) -> None:
    """Wait for the child to end (its sentinel becomes readable), then reap it."""
    if process.exitcode is None:
        await _readable(process.sentinel)
    process.join(0)


async def _reap(process: multiprocessing.process.BaseProcess, wait_s: float) -> None:
    """The child is gone when this returns: it may end on its own for ``wait_s`` (after it
    reported), then gets SIGTERM, then SIGKILL after ``TERM_GRACE_S``. Cancelled meanwhile,
    it is killed at once."""
    steps = ((None, wait_s), (process.terminate, TERM_GRACE_S), (process.kill, None))
    try:
        for stop, grace in steps:
            if stop is not None:
                stop()
            if grace is None:
                await _exited(process)
                return
            try:
                async with asyncio.timeout(grace):
                    await _exited(process)
                return
            except TimeoutError:
                continue
    except BaseException:
        process.kill()
        raise


# -- in the child process ------------------------------------------------------------------


class _RelayLogger:
    """structlog's final logger in a handler process: each line goes to the daemon."""

    def __init__(self, writer: multiprocessing.connection.Connection) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.send_bytes(message.encode())

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _log_message(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    event["handler_pid"] = os.getpid()
    return json.dumps({"kind": "log", "record": event}, default=str)


def _child_main(job: ProcessJob, writer: multiprocessing.connection.Connection) -> None:
    """The handler process: run the handler once, send the outcome, exit."""
    # A Ctrl-C in a terminal reaches the whole process group: the daemon drains, and the
    # attempt is stopped by the daemon, not by the keyboard.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _log_message,
        ],
        logger_factory=lambda *args: _RelayLogger(writer),
        cache_logger_on_first_use=False,
    )
    try:
        message = _run_job(job)
    except BaseException as exc:
        message = {
            "kind": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    writer.send_bytes(json.dumps(message).encode())
    writer.close()


def _resolve(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _run_job(job: ProcessJob) -> dict[str, Any]:
    function = _resolve(job.module, job.qualname)
    model = _resolve(job.model_module, job.model_qualname)
    payload = model.model_validate_json(job.payload_json)
    ctx = ActionContext(
        task_id=uuid.UUID(job.task_id),
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        action=job.action,
        log=structlog.get_logger(),
        _transaction=unavailable_transaction(IN_A_PROCESS),
    )
    try:
        if inspect.iscoroutinefunction(function):
            value = asyncio.run(function(ctx, payload))
        else:
            value = function(ctx, payload)
    except Retry as retry:
        return {"kind": "retry", "reason": retry.reason, "after_s": retry.after_s}
    except Fail as fail:
        return {"kind": "fail", "reason": fail.reason}
    result, error = json_result(value)
    if error is not None:
        return {"kind": "invalid", "error": error}
    return {"kind": "ok", "result": result}
