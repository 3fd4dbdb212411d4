"""SIGHUP: re-read the config file and the environment, validate the whole result, apply
what can change live, and keep what needs a restart."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from scheduler_daemon.settings import ConfigError, Settings, flatten, load_settings

# Keys a running daemon cannot change: they are logged and left as they were.
RESTART_KEYS = (
    "database.",
    "http.host",
    "http.port",
    "http.body_limit_bytes",
    "scheduling.backend",
    "aws.",
    "sqs.queue_url",
    "sqs.pollers",
    "handlers.modules",
)

Result = Literal["applied", "unchanged", "rejected"]


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    result: Result
    changed: list[str] = field(default_factory=list)  # keys applied live
    restart_required: list[str] = field(default_factory=list)  # changed, kept as they were
    error: str | None = None


def needs_restart(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESTART_KEYS)


def _flat(settings: Settings) -> dict[str, Any]:
    # Python mode: SecretStr values compare by their secret, so a rotated token is a change.
    return flatten(settings.model_dump())


def diff(old: Settings, new: Settings) -> list[str]:
    a, b = _flat(old), _flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def keep_restart_keys(old: Settings, new: Settings, keys: list[str]) -> Settings:
    """``new`` with the values of ``keys`` (restart-only) taken from ``old``."""
    sections: dict[str, dict[str, Any]] = {}
    for key in keys:
        section, field_name = key.split(".")[:2]
        sections.setdefault(section, {})[field_name] = getattr(getattr(old, section), field_name)
    update: dict[str, BaseModel] = {
        section: getattr(new, section).model_copy(update=values)
        for section, values in sections.items()
    }
    return new.model_copy(update=update)


class Reloader:
    """Holds the live settings; ``reload()`` swaps them and tells the subscribers."""

    def __init__(
        self,
        settings: Settings,
        clock_now: Callable[[], datetime],
        load: Callable[[], Settings] = load_settings,
    ) -> None:
        self.settings = settings
        self._now = clock_now
        self._load = load
        self.loaded_at = clock_now()
        self._subscribers: list[Callable[[Settings, Settings], None]] = []
        self.counts: dict[Result, int] = {"applied": 0, "unchanged": 0, "rejected": 0}
        self.on_result: Callable[[Result], None] | None = None

    def __call__(self) -> Settings:
        return self.settings

    def subscribe(self, apply: Callable[[Settings, Settings], None]) -> None:
        """``apply(old, new)`` runs after each applied reload."""
        self._subscribers.append(apply)

    def reload(self) -> ReloadOutcome:
        try:
            new = self._load()
        except ConfigError as exc:
            return self._done(ReloadOutcome("rejected", error=str(exc)))
        old = self.settings
        changed = diff(old, new)
        restart = [k for k in changed if needs_restart(k)]
        live = [k for k in changed if not needs_restart(k)]
        if restart:
            new = keep_restart_keys(old, new, restart)
        self.loaded_at = self._now()
        if not live:
            return self._done(ReloadOutcome("unchanged", restart_required=restart))
        self.settings = new
        for apply in self._subscribers:
            apply(old, new)
        return self._done(ReloadOutcome("applied", changed=live, restart_required=restart))

    def _done(self, outcome: ReloadOutcome) -> ReloadOutcome:
        self.counts[outcome.result] += 1
        if self.on_result is not None:
            self.on_result(outcome.result)
        return outcome


def describe(outcome: ReloadOutcome) -> Mapping[str, Any]:
    return {
        "result": outcome.result,
        "changed": outcome.changed,
        "restart_required": outcome.restart_required,
    }
