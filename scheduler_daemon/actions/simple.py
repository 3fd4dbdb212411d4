"""The ``log`` action (seed 001's ``message``) and ``noop`` (for benchmarks and tests)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from scheduler_daemon.actions.base import ActionContext, ActionResult


class LogPayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: str = Field(default="", max_length=10_000)
    level: Literal["debug", "info", "warning", "error"] = "info"


class LogAction:
    name: ClassVar[str] = "log"
    payload_model: ClassVar[type[BaseModel]] = LogPayload

    async def run(self, payload: Any, ctx: ActionContext) -> ActionResult:
        assert isinstance(payload, LogPayload)
        extra = payload.model_extra or {}
        method = getattr(ctx.log, payload.level)
        method("task_log", message=payload.message, **{f"data_{k}": v for k, v in extra.items()})
        return ActionResult.success(output=payload.message[:8192])

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class NoopPayload(BaseModel):
    model_config = ConfigDict(extra="allow")


class NoopAction:
    name: ClassVar[str] = "noop"
    payload_model: ClassVar[type[BaseModel]] = NoopPayload

    async def run(self, payload: Any, ctx: ActionContext) -> ActionResult:
        return ActionResult.success()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
