"""The Action protocol, its result type and the registry that validates payloads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    retryable: bool = False
    error: str | None = None
    output: str | None = None
    result: Any = None

    @classmethod
    def success(cls, output: str | None = None, result: Any = None) -> ActionResult:
        return cls(ok=True, output=output, result=result)

    @classmethod
    def failure(cls, error: str, *, retryable: bool, output: str | None = None) -> ActionResult:
        return cls(ok=False, retryable=retryable, error=error, output=output)


class Action(Protocol):
    name: ClassVar[str]
    payload_model: ClassVar[type[BaseModel]]

    async def run(self, payload: Any) -> ActionResult: ...

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


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        field = f"{prefix}.{path}" if prefix and path else (prefix or path or "body")
        out.append(FieldError(field=field, message=err["msg"]))
    return out


class ActionRegistry:
    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}

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

    async def start(self) -> None:
        for action in set(self._actions.values()):
            await action.start()

    async def close(self) -> None:
        for action in set(self._actions.values()):
            await action.close()
