"""Settings precedence (defaults < TOML file < env), validation errors naming the key, masking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler_daemon.settings import (
    CONFIG_ENV,
    ConfigError,
    Settings,
    flatten,
    load_settings,
    masked,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SCHEDULER_* variable of the developer's shell or CI leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("SCHEDULER_"):
            monkeypatch.delenv(name)


def write_toml(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_env() -> None:
    s = load_settings()
    assert s.executor.lease_s == 30.0
    assert s.executor.heartbeat_s is None
    assert s.executor.heartbeat_interval_s == 10.0  # a third of lease_s
    assert s.executor.concurrency == 50
    assert s.discovery.poll_interval_s == 5.0
    assert s.database.url is None
    assert s == Settings()


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[executor]\nconcurrency = 7\n[discovery]\nbatch_size = 3\n")
    s = load_settings(path)
    assert s.executor.concurrency == 7
    assert s.discovery.batch_size == 3
    assert s.executor.lease_s == 30.0  # untouched keys keep their default


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path, "[executor]\nconcurrency = 7\nlease_s = 20.0\nheartbeat_s = 2.0\n")
    monkeypatch.setenv("SCHEDULER_EXECUTOR__LEASE_S", "6")
    s = load_settings(path)
    assert s.executor.lease_s == 6.0
    # The env var replaces one key only: the rest of the file's section still applies.
    assert s.executor.concurrency == 7
    assert s.executor.heartbeat_s == 2.0


def test_env_overrides_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_HTTP__PORT", "9001")
    monkeypatch.setenv("SCHEDULER_RETRY__JITTER", "false")
    s = load_settings()
    assert s.http.port == 9001
    assert s.retry.jitter is False


def test_file_named_by_scheduler_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path, "[http]\nport = 9100\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert load_settings().http.port == 9100


def test_explicit_path_wins_over_scheduler_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = write_toml(tmp_path, "[http]\nport = 9100\n", "named.toml")
    given = write_toml(tmp_path, "[http]\nport = 9200\n", "given.toml")
    monkeypatch.setenv(CONFIG_ENV, str(named))
    assert load_settings(given).http.port == 9200
    assert os.environ[CONFIG_ENV] == str(named)  # restored afterwards


def test_load_does_not_leave_scheduler_config_set(tmp_path: Path) -> None:
    load_settings(write_toml(tmp_path, "[http]\nport = 9100\n"))
    assert CONFIG_ENV not in os.environ


@pytest.mark.parametrize(
    "name",
    [
        "scheduler_executor__lease_s",
        "SCHEDULER_executor__lease_s",
        "SCHEDULER_EXECUTOR__lease_s",
        "Scheduler_Executor__Lease_S",
    ],
)
def test_env_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "12.5")
    assert load_settings().executor.lease_s == 12.5


@pytest.mark.parametrize(
    ("env", "value", "key"),
    [
        ("SCHEDULER_EXECUTOR__CONCURRENCY", "0", "executor.concurrency"),
        ("SCHEDULER_EXECUTOR__CONCURRENCY", "many", "executor.concurrency"),
        ("SCHEDULER_HTTP__PORT", "70000", "http.port"),
        ("SCHEDULER_DATABASE__POOL_SIZE", "1", "database.pool_size"),
        ("SCHEDULER_LOG__LEVEL", "loud", "log.level"),
        ("SCHEDULER_DISCOVERY__POLL_INTERVAL_S", "0", "discovery.poll_interval_s"),
    ],
)
def test_invalid_env_value_names_the_key(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, key: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings()


def test_unknown_env_key_in_a_section_is_rejected_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEDULER_EXECUTOR__LEASE_SECONDS", "6")
    with pytest.raises(ConfigError, match=r"executor\.lease_seconds"):
        load_settings()


def test_invalid_file_value_names_the_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[executor]\nconcurrency = -5\n")
    with pytest.raises(ConfigError, match=r"executor\.concurrency"):
        load_settings(path)


def test_unknown_key_in_file_is_rejected_naming_it(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[executor]\nconcurency = 5\n")
    with pytest.raises(ConfigError, match=r"executor\.concurency"):
        load_settings(path)


def test_unknown_section_in_file_is_rejected_naming_it(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[executer]\nconcurrency = 5\n")
    with pytest.raises(ConfigError, match="executer"):
        load_settings(path)


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[executor\nconcurrency = \n")
    with pytest.raises(ConfigError):
        load_settings(path)


@pytest.mark.parametrize(("lease", "heartbeat"), [(10.0, 10.0), (10.0, 15.0)])
def test_heartbeat_not_shorter_than_lease_is_rejected(
    tmp_path: Path, lease: float, heartbeat: float
) -> None:
    path = write_toml(tmp_path, f"[executor]\nlease_s = {lease}\nheartbeat_s = {heartbeat}\n")
    with pytest.raises(ConfigError, match=r"heartbeat_s"):
        load_settings(path)


def test_heartbeat_against_lease_from_env_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_EXECUTOR__LEASE_S", "4")
    monkeypatch.setenv("SCHEDULER_EXECUTOR__HEARTBEAT_S", "5")
    with pytest.raises(ConfigError, match=r"executor"):
        load_settings()


def test_documented_lease_env_example_works_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_EXECUTOR__LEASE_S", "6")
    # config/default.toml gives this as the example of an env override: it must work alone.
    s = load_settings()
    assert s.executor.lease_s == 6.0
    assert s.executor.heartbeat_s is None
    assert s.executor.heartbeat_interval_s == 2.0


def test_explicit_heartbeat_is_used_as_is(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[executor]\nlease_s = 20.0\nheartbeat_s = 2.5\n")
    s = load_settings(path)
    assert s.executor.heartbeat_s == 2.5
    assert s.executor.heartbeat_interval_s == 2.5


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(missing)


def test_missing_file_named_by_env_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml"):
        load_settings()


def test_masked_hides_the_password_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_DATABASE__URL", "postgresql://sched:s3cr3t@db.internal:5432/app")
    s = load_settings()
    assert s.database.url is not None
    assert s.database.url.get_secret_value() == "postgresql://sched:s3cr3t@db.internal:5432/app"
    data = masked(s)
    assert data["database"]["url"] == "postgresql://sched:***@db.internal:5432/app"
    assert "s3cr3t" not in repr(data)
    assert "s3cr3t" not in repr(s)
    assert data["executor"]["lease_s"] == 30.0


def test_masked_password_containing_at_sign() -> None:
    s = Settings(database={"url": "postgresql://u:p@ss@host/db"})
    url = masked(s)["database"]["url"]
    assert url == "postgresql://u:***@host/db"


def test_masked_url_without_credentials_is_unchanged() -> None:
    s = Settings(database={"url": "postgresql://host:5432/db"})
    assert masked(s)["database"]["url"] == "postgresql://host:5432/db"
    assert masked(Settings())["database"]["url"] is None


def test_default_toml_equals_builtin_defaults() -> None:
    from_file = load_settings(REPO / "config" / "default.toml")
    assert from_file == Settings()
    assert masked(from_file) == masked(Settings())


def test_default_toml_documents_every_key() -> None:
    text = (REPO / "config" / "default.toml").read_text(encoding="utf-8")
    for key in flatten(Settings().model_dump()):
        section, _, name = key.partition(".")
        assert f"[{section}]" in text
        assert f"{name} =" in text, key


def test_local_toml_loads() -> None:
    s = load_settings(REPO / "config" / "local.toml")
    assert s.log.format == "console"
    assert s.shutdown.grace_s == 10.0
    assert s.database.url is None


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.executor.lease_s = 1.0  # type: ignore[misc]


def test_eventbridge_backend_names_the_missing_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_SCHEDULING__BACKEND", "eventbridge")
    with pytest.raises(ConfigError, match=r"sqs\.queue_url, eventbridge\.role_arn are not set"):
        load_settings()
    monkeypatch.setenv("SCHEDULER_SQS__QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/q")
    with pytest.raises(ConfigError, match=r"eventbridge\.role_arn is not set"):
        load_settings()
    monkeypatch.setenv("SCHEDULER_EVENTBRIDGE__ROLE_ARN", "arn:aws:iam::1:role/r")
    settings = load_settings()
    assert settings.scheduling.backend == "eventbridge"
    assert settings.eventbridge.schedule_after_s == 900


def test_unknown_backend_is_rejected_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_SCHEDULING__BACKEND", "sqs")
    with pytest.raises(ConfigError, match=r"scheduling\.backend"):
        load_settings()


def test_bad_signing_secret_is_rejected_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_WEBHOOK__SIGNING_SECRETS", '["whsec_not-base64!"]')
    with pytest.raises(ConfigError, match=r"webhook\.signing_secrets") as exc:
        load_settings()
    assert "not-base64" not in str(exc.value)


def test_queue_limits_load_from_toml_and_bad_ones_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "queues.toml"
    config.write_text(
        "[queues.mail]\nconcurrency = 5\nglobal_concurrency = 20\nrate_per_s = 2.5\n"
        '[queues."reports.v2"]\nburst = 3\nrate_per_s = 1\n'
    )
    s = load_settings(config)
    assert s.queues["mail"].concurrency == 5
    assert s.queues["mail"].global_concurrency == 20
    assert s.queues["mail"].bucket_size == 2.5
    assert s.queues["reports.v2"].bucket_size == 3.0
    config.write_text("[queues.mail]\nburst = 3\n")
    with pytest.raises(ConfigError, match=r"queues\.mail.*burst is set but rate_per_s is not"):
        load_settings(config)
    config.write_text("[queues.mail]\nconcurrency = 0\n")
    with pytest.raises(ConfigError, match=r"queues\.mail\.concurrency"):
        load_settings(config)
    config.write_text('[queues."bad name"]\nconcurrency = 1\n')
    with pytest.raises(ConfigError, match=r"queue name 'bad name' is not valid"):
        load_settings(config)
