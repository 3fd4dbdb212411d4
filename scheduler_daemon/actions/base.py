"""The Action protocol, its result type and the registry that validates payloads."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    retryable: bool = False
    error: str | None = None
    output: str | None = None
    result: Any = None
    retry_after_s: float | None = None  # the action's own wish for the retry delay

    @classmethod
    def success(cls, output: str | None = None, result: Any = None) -> ActionResult:
        return cls(ok=True, output=output, result=result)

    @classmethod
    def failure(
        cls,
        error: str,
        *,
        retryable: bool,
        output: str | None = None,
        retry_after_s: float | None = None,
    ) -> ActionResult:
        return cls(
            ok=False,
            retryable=retryable,
            error=error,
            output=output,
            retry_after_s=retry_after_s,
        )


MAX_RETRY_AFTER_S = 7 * 24 * 3600.0  # a handler's requested retry delay is capped at a week


class Retry(Exception):
    """Raised by a handler: this attempt failed, try again after ``after`` (seconds or a
    timedelta; None: the configured backoff). Counts as an attempt."""

    def __init__(
        self, reason: str = "retry requested", *, after: float | timedelta | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        if isinstance(after, timedelta):
            after = after.total_seconds()
        if after is not None and after < 0:
            raise ValueError("Retry(after=...) must not be negative")
        self.after_s = None if after is None else min(after, MAX_RETRY_AFTER_S)


class Fail(Exception):
    """Raised by a handler: fail the task at once, without further retries."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


TransactionFactory = Callable[[], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an action knows about the attempt it runs."""

    task_id: uuid.UUID
    attempt: int
    max_attempts: int
    action: str
    log: Any  # a structlog logger bound to task_id, attempt and action
    _transaction: TransactionFactory

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """The handler's own database transaction (an asyncpg connection inside a
        transaction): committed when the block ends, rolled back when it raises. The task's
        status and attempt are recorded outside it, so a rollback never hides a failure."""
        return self._transaction()


class Action(Protocol):
    name: ClassVar[str]
    payload_model: ClassVar[type[BaseModel]]

    async def run(self, payload: Any, ctx: ActionContext) -> ActionResult: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class UnknownAction(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class PayloadInvalid(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def field_path(loc: tuple[int | str, ...] | list[int | str], prefix: str = "") -> str:
    """``("tasks", 3, "run_at")`` -> ``tasks[3].run_at`` (after ``prefix``)."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "body"


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    return [FieldError(field_path(err["loc"], prefix), err["msg"]) for err in exc.errors()]


class ActionRegistry:
    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._actions

    def register(self, action: Action, *aliases: str) -> None:
        for name in (action.name, *aliases):
            if name in self._actions:
                raise ValueError(f"action {name!r} is already registered")
            self._actions[name] = action

    def names(self) -> list[str]:
        return sorted(self._actions)

    def get(self, name: str) -> Action:
        try:
            return self._actions[name]
        except KeyError:
            raise UnknownAction(name) from None

    def validate(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Validate a payload for action ``name``; return it as it will be stored."""
        model = self.get(name).payload_model
        try:
            parsed = model.model_validate(payload)
        except ValidationError as exc:
            raise PayloadInvalid(field_errors(exc, "payload")) from None
        dumped: dict[str, Any] = parsed.model_dump(mode="json", exclude_unset=True, by_alias=True)
        return dumped

    def parse(self, name: str, payload: dict[str, Any]) -> Any:
        return self.get(name).payload_model.model_validate(payload)

    async def start(self, only: Iterable[str] | None = None) -> None:
        """Start the actions (all, or those named in ``only``: the ones this daemon runs)."""
        names = set(self._actions) if only is None else set(only) & set(self._actions)
        for action in {self._actions[name] for name in names}:
            await action.start()

    async def close(self) -> None:
        for action in set(self._actions.values()):
            await action.close()
