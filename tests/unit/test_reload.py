"""SIGHUP reload: what changed, what needs a restart, and a rejected config changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import SecretStr

from scheduler_daemon.reload import Reloader, diff, needs_restart
from scheduler_daemon.settings import ConfigError, Settings, TokenConfig


def settings(**sections: object) -> Settings:
    return Settings().model_copy(update=sections)


def test_diff_names_changed_keys_and_sees_rotated_secrets() -> None:
    old = Settings()
    token = TokenConfig(name="ops", token=SecretStr("a" * 20), role="admin")
    rotated = TokenConfig(name="ops", token=SecretStr("b" * 20), role="admin")
    a = settings(http=old.http.model_copy(update={"tokens": [token]}))
    b = settings(http=old.http.model_copy(update={"tokens": [rotated]}))
    assert diff(a, b) == ["http.tokens"]
    c = settings(executor=old.executor.model_copy(update={"concurrency": 7}))
    assert diff(old, c) == ["executor.concurrency"]
    assert diff(old, Settings()) == []


def test_restart_keys() -> None:
    for key in ("database.url", "database.pool_size", "http.port", "http.host", "aws.region"):
        assert needs_restart(key), key
    for key in ("http.tokens", "executor.concurrency", "log.level", "webhook.allow_hosts"):
        assert not needs_restart(key), key


class Loads:
    def __init__(self) -> None:
        self.next: Settings | ConfigError = Settings()

    def __call__(self) -> Settings:
        if isinstance(self.next, ConfigError):
            raise self.next
        return self.next


def test_reload_applies_live_keys_and_keeps_restart_keys() -> None:
    loads = Loads()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    reloader = Reloader(Settings(), lambda: now, loads)
    seen: list[tuple[int, int]] = []
    reloader.subscribe(lambda old, new: seen.append((old.http.port, new.executor.concurrency)))
    base = Settings()
    loads.next = settings(
        executor=base.executor.model_copy(update={"concurrency": 3}),
        http=base.http.model_copy(update={"port": 9999}),
    )
    outcome = reloader.reload()
    assert outcome.result == "applied"
    assert outcome.changed == ["executor.concurrency"]
    assert outcome.restart_required == ["http.port"]
    assert reloader().executor.concurrency == 3
    assert reloader().http.port == base.http.port  # kept until a restart
    assert seen == [(base.http.port, 3)]


def test_rejected_reload_keeps_everything() -> None:
    loads = Loads()
    reloader = Reloader(Settings(), lambda: datetime.now(UTC), loads)
    before = reloader()
    loads.next = ConfigError("executor.concurrency: Input should be greater than or equal to 1")
    results: list[str] = []
    reloader.on_result = results.append
    outcome = reloader.reload()
    assert outcome.result == "rejected"
    assert outcome.error is not None
    assert "executor.concurrency" in outcome.error
    assert reloader() is before
    loads.next = Settings()
    assert reloader.reload().result == "unchanged"
    assert results == ["rejected", "unchanged"]
    assert reloader.counts == {"applied": 0, "unchanged": 1, "rejected": 1}
