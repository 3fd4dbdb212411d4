"""Settings: defaults < TOML file named by ``SCHEDULER_CONFIG`` < ``SCHEDULER_<SECTION>__<KEY>``.

Every key here is a contract that deployments rely on; ``config/default.toml`` documents each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from scheduler_daemon.actions.signing import parse_secret
from scheduler_daemon.domain.backoff import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_BASE_S,
    DEFAULT_RETRY_CAP_S,
    MAX_RETRY_BASE_S,
    MAX_RETRY_CAP_S,
)

CONFIG_ENV = "SCHEDULER_CONFIG"
ENV_PREFIX = "SCHEDULER_"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(Section):
    url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL; unset starts an embedded PostgreSQL"
    )
    embedded_dir: Path = Field(default=Path(".scheduler-data"))
    pool_size: int = Field(default=10, ge=2, le=200)
    # Handlers' ctx.transaction() connections come from a pool of their own (opened on first
    # use), so slow handlers cannot starve claims, lease renewals and completions.
    handler_pool_size: int = Field(default=5, ge=1, le=200)


Role = Literal["read", "write", "admin"]


class TokenConfig(Section):
    """One API token: who it is (``name``, logged) and what it may do (``role``)."""

    name: str = Field(min_length=1, max_length=100)
    token: SecretStr
    role: Role

    @model_validator(mode="after")
    def _long_enough(self) -> TokenConfig:
        if len(self.token.get_secret_value()) < 16:
            raise ValueError(f"token {self.name!r} is shorter than 16 characters")
        return self


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class HttpSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    body_limit_bytes: int = Field(default=1_048_576, ge=1024)
    payload_limit_bytes: int = Field(default=262_144, ge=256)
    tokens: list[TokenConfig] = Field(default_factory=list)
    allow_anonymous: bool = False

    @model_validator(mode="after")
    def _tokens_or_loopback(self) -> HttpSettings:
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("http.tokens: token names must be unique")
        secrets = [t.token.get_secret_value() for t in self.tokens]
        if len(set(secrets)) != len(secrets):
            raise ValueError("http.tokens: two tokens have the same value")
        if not self.tokens and not self.allow_anonymous and not self.loopback:
            raise ValueError(
                f"http.host is {self.host!r} but http.tokens is empty: without tokens the API "
                "only listens on loopback; configure http.tokens or set "
                "http.allow_anonymous = true"
            )
        return self

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def anonymous(self) -> bool:
        """Requests need no token (no tokens configured)."""
        return not self.tokens


class ExecutorSettings(Section):
    concurrency: int = Field(default=50, ge=1, le=10_000)
    default_timeout_s: float = Field(default=30.0, gt=0)
    lease_s: float = Field(default=30.0, gt=0)
    heartbeat_s: float | None = Field(
        default=None, gt=0, description="lease renewal interval; unset: a third of lease_s"
    )

    @model_validator(mode="after")
    def _heartbeat_below_lease(self) -> ExecutorSettings:
        if self.heartbeat_s is not None and self.heartbeat_s >= self.lease_s:
            raise ValueError("executor.heartbeat_s must be shorter than executor.lease_s")
        return self

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3


class DiscoverySettings(Section):
    # At most 60: inserts due further ahead than that send no NOTIFY (see migration 0001).
    poll_interval_s: float = Field(default=5.0, gt=0, le=60)
    batch_size: int = Field(default=100, ge=1, le=10_000)


class ExpanderSettings(Section):
    # Occurrences due within this many seconds are made into tasks ahead of time; short, so
    # that edits and pauses apply quickly.
    horizon_s: float = Field(default=60.0, gt=0, le=3600)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    poll_interval_s: float = Field(default=30.0, gt=0, le=600)


class RetrySettings(Section):
    base_s: float = Field(default=DEFAULT_RETRY_BASE_S, gt=0, le=MAX_RETRY_BASE_S)
    cap_s: float = Field(default=DEFAULT_RETRY_CAP_S, gt=0, le=MAX_RETRY_CAP_S)
    jitter: bool = True
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=1000)


class QueueRetry(Section):
    """A queue's retry policy (``[queues.<name>.retry]``): what its tasks use when they do not
    set their own; every key optional (unset: ``[retry]``'s)."""

    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    base_s: float | None = Field(default=None, gt=0, le=MAX_RETRY_BASE_S)
    cap_s: float | None = Field(default=None, gt=0, le=MAX_RETRY_CAP_S)


class ShutdownSettings(Section):
    grace_s: float = Field(default=30.0, ge=0)


class WebhookSettings(Section):
    # The SSRF guard: webhooks may only reach public addresses unless these say otherwise.
    allow_private_networks: bool = False
    allow_hosts: list[str] = Field(default_factory=list)
    follow_redirects: bool = False
    # Standard Webhooks signing secrets ("whsec_" + base64). Every request is signed with each
    # (two during a rotation); empty: requests are signed only when the task names a secret.
    signing_secrets: list[SecretStr] = Field(default_factory=list, max_length=2)
    # Most response-body bytes read (and, cut to 8 KiB, stored as the attempt's output).
    max_response_bytes: int = Field(default=65_536, ge=0, le=10_485_760)

    @field_validator("signing_secrets")
    @classmethod
    def _whsec(cls, value: list[SecretStr]) -> list[SecretStr]:
        for i, secret in enumerate(value):
            parse_secret(secret.get_secret_value(), f"webhook.signing_secrets[{i}]")
        return value


class HandlersSettings(Section):
    modules: list[str] = Field(
        default_factory=list, description="modules imported at start to register handlers"
    )


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    # Header values never written to logs or stored attempt output (names, any case).
    redact_headers: list[str] = Field(
        default_factory=lambda: [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
            "x-auth-token",
        ]
    )


class RetentionSettings(Section):
    # Finished tasks (with their attempts) are deleted this many days after they finished.
    completed_days: float = Field(default=7.0, gt=0, description="completed and cancelled")
    failed_days: float = Field(default=30.0, gt=0)
    # Copy tasks and attempts to the archive tables before deleting them.
    archive: bool = False
    batch_size: int = Field(default=500, ge=1, le=10_000)
    interval_s: float = Field(default=60.0, gt=0, le=86_400)


class WatchdogSettings(Section):
    # Event-loop lag above this makes /readyz answer 503.
    max_loop_lag_s: float = Field(default=1.0, gt=0)
    # A component that reported no progress for this long is stalled (/readyz 503).
    stall_after_s: float = Field(default=120.0, gt=0)
    interval_s: float = Field(default=0.5, gt=0, le=60)


AlertEvent = Literal["task_failed", "task_rescued", "component_stalled", "schedule_misfired"]
ALERT_EVENTS: tuple[AlertEvent, ...] = (
    "task_failed",
    "task_rescued",
    "component_stalled",
    "schedule_misfired",
)


class AlertChannel(Section):
    """Where alerts go: a generic JSON webhook or a Slack-compatible incoming webhook."""

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["webhook", "slack"]
    # A secret (a Slack hook URL is its own credential): masked, never logged.
    url: SecretStr
    events: list[AlertEvent] = Field(default_factory=lambda: list(ALERT_EVENTS), min_length=1)
    # The least seconds between two deliveries of alike alerts to this channel; unset:
    # alerts.dedupe_window_s.
    min_interval_s: float | None = Field(default=None, ge=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise ValueError("must be an http or https URL")  # never repeats the URL
        return value


class AlertsSettings(Section):
    channels: list[AlertChannel] = Field(default_factory=list)
    # Alike alerts (same event, action and queue; component; schedule) within this many
    # seconds are sent once; the next delivery carries the count of those suppressed.
    dedupe_window_s: float = Field(default=300.0, ge=0)
    # Delivery attempts per alert and channel (retried with backoff), and each one's timeout.
    max_attempts: int = Field(default=5, ge=1, le=100)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Alerts waiting or being delivered, per channel; more are dropped (and counted).
    queue_size: int = Field(default=1000, ge=1, le=1_000_000)

    @field_validator("channels")
    @classmethod
    def _unique_names(cls, value: list[AlertChannel]) -> list[AlertChannel]:
        names = [c.name for c in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"channel names must be unique: {', '.join(duplicates)} repeated")
        return value


class SchedulingSettings(Section):
    # postgres: discovery claims due rows (SKIP LOCKED, LISTEN/NOTIFY). eventbridge: a publisher
    # hands each task's wake-up to SQS (soon) or an EventBridge Scheduler at() schedule
    # (later), and an SQS long-poll consumer claims the task when its message arrives.
    backend: Literal["postgres", "eventbridge"] = "postgres"


class AwsSettings(Section):
    # Credentials come from the standard AWS chain (the ECS task role in production).
    region: str = "us-east-1"
    endpoint_url: str | None = Field(
        default=None, description="a local endpoint (moto) for development; unset: AWS"
    )


class SqsSettings(Section):
    queue_url: str | None = None
    wait_time_s: int = Field(default=20, ge=0, le=20)
    visibility_timeout_s: int = Field(default=60, ge=5, le=43_200)
    # Receive calls in flight at once (each asks for at most 10 messages, never more than the
    # executor has free slots).
    pollers: int = Field(default=2, ge=1, le=32)


class EventBridgeSettings(Section):
    group: str = Field(default="scheduler-daemon", min_length=1, max_length=64)
    role_arn: str | None = None
    dead_letter_arn: str | None = None
    target_arn: str | None = Field(default=None, description="unset: the tasks queue's ARN")
    # Tasks due later than this go to EventBridge Scheduler; sooner ones are sent to SQS with
    # DelaySeconds (at most 900, SQS's limit).
    schedule_after_s: int = Field(default=900, ge=1, le=900)
    # at() fires with one-minute precision: schedules are set this much ahead of run_at and
    # the consumer holds the early message until run_at.
    lead_s: int = Field(default=60, ge=0, le=600)
    max_retry_attempts: int = Field(default=185, ge=0, le=185)
    max_event_age_s: int = Field(default=86_400, ge=60, le=86_400)
    publish_batch_size: int = Field(default=50, ge=1, le=1000)
    # A due task whose published wake-up led to no claim for this long is published again
    # (its message went to a dead-letter queue, or its schedule was deleted by hand).
    republish_after_s: float = Field(default=300.0, ge=30)


# Queue names as tasks spell them (api/schemas.py NAME_PATTERN).
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


class QueueLimits(Section):
    """Limits of one queue (``[queues.<name>]``); every key optional, all applied together."""

    concurrency: int | None = Field(
        default=None, ge=1, le=10_000, description="tasks running at once in this daemon"
    )
    global_concurrency: int | None = Field(
        default=None, ge=1, le=1_000_000, description="tasks running at once across all daemons"
    )
    rate_per_s: float | None = Field(
        default=None, gt=0, le=100_000, description="tasks started per second by this daemon"
    )
    burst: int | None = Field(
        default=None, ge=1, le=100_000, description="token bucket size; unset: one second's"
    )
    retry: QueueRetry = Field(
        default_factory=QueueRetry, description="the retry policy of the queue's tasks"
    )

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> QueueLimits:
        if self.burst is not None and self.rate_per_s is None:
            raise ValueError("burst is set but rate_per_s is not")
        return self

    @property
    def bucket_size(self) -> float:
        """How many starts the token bucket holds (burst, or one second's worth, at least 1)."""
        if self.burst is not None:
            return float(self.burst)
        return max(1.0, float(self.rate_per_s or 0.0))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        # Errors never repeat the input: it may hold a secret (a token, an alert URL).
        hide_input_in_errors=True,
    )

    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    executor: ExecutorSettings = ExecutorSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    expander: ExpanderSettings = ExpanderSettings()
    retry: RetrySettings = RetrySettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    log: LogSettings = LogSettings()
    handlers: HandlersSettings = HandlersSettings()
    webhook: WebhookSettings = WebhookSettings()
    scheduling: SchedulingSettings = SchedulingSettings()
    aws: AwsSettings = AwsSettings()
    sqs: SqsSettings = SqsSettings()
    eventbridge: EventBridgeSettings = EventBridgeSettings()
    retention: RetentionSettings = RetentionSettings()
    watchdog: WatchdogSettings = WatchdogSettings()
    alerts: AlertsSettings = AlertsSettings()
    queues: dict[str, QueueLimits] = Field(default_factory=dict)

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: dict[str, QueueLimits]) -> dict[str, QueueLimits]:
        for name in value:
            if not QUEUE_NAME.fullmatch(name):
                raise ValueError(f"queue name {name!r} is not valid: 1-100 of A-Z a-z 0-9 _ . : -")
        return value

    def max_attempts(self, queue: str) -> int:
        """The attempts a new task of ``queue`` gets when its request does not say: the
        queue's ``retry.max_attempts``, else ``retry.max_attempts``."""
        limits = self.queues.get(queue)
        if limits is not None and limits.retry.max_attempts is not None:
            return limits.retry.max_attempts
        return self.retry.max_attempts

    @model_validator(mode="after")
    def _backend_complete(self) -> Settings:
        if self.scheduling.backend == "eventbridge":
            missing = [
                key
                for key, value in (
                    ("sqs.queue_url", self.sqs.queue_url),
                    ("eventbridge.role_arn", self.eventbridge.role_arn),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"scheduling.backend is 'eventbridge' but {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not set"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


def load_settings(config_file: str | Path | None = None) -> Settings:
    """Load settings from defaults, the TOML file and the environment, or raise ConfigError."""
    path = Path(config_file) if config_file else None
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    previous = os.environ.get(CONFIG_ENV)
    try:
        if path is not None:
            os.environ[CONFIG_ENV] = str(path)
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc
    except ValueError as exc:  # malformed TOML or env JSON
        raise ConfigError(str(exc)) from exc
    finally:
        if path is not None:
            if previous is None:
                os.environ.pop(CONFIG_ENV, None)
            else:
                os.environ[CONFIG_ENV] = previous


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{key}: {err['msg']}")
    return "; ".join(parts)


def masked(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data with secrets masked (for check-config and admin)."""
    data = settings.model_dump(mode="json")
    url = settings.database.url
    data["database"]["url"] = _mask_url(url.get_secret_value()) if url is not None else None
    data["executor"]["heartbeat_s"] = settings.executor.heartbeat_interval_s  # effective value
    for token in data["http"]["tokens"]:
        token["token"] = "***"
    data["webhook"]["signing_secrets"] = ["***" for _ in settings.webhook.signing_secrets]
    for channel in data["alerts"]["channels"]:
        channel["url"] = "***"
    return data


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
