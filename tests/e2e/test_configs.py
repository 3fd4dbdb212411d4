"""The shipped config files pass ``scheduler-daemon check-config``.

config/production.toml holds no secrets and no per-environment values: it is valid only with
the environment variables a deployment sets (the image sets SCHEDULER_CONFIG to the file).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.e2e.conftest import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
PRODUCTION = CONFIG_DIR / "production.toml"

DB_PASSWORD = "db-password-not-to-print"
TOKEN = "prod-token-not-to-print-0123456789"
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/scheduler-tasks"
ROLE_ARN = "arn:aws:iam::123456789012:role/scheduler-daemon-eventbridge"

# What the ECS task definition sets next to the image's SCHEDULER_CONFIG.
DEPLOYMENT_ENV = {
    "SCHEDULER_CONFIG": str(PRODUCTION),
    "SCHEDULER_DATABASE__URL": f"postgresql://scheduler:{DB_PASSWORD}@db.internal:5432/scheduler",
    "SCHEDULER_HTTP__TOKENS": json.dumps([{"name": "ops", "token": TOKEN, "role": "admin"}]),
    "SCHEDULER_SQS__QUEUE_URL": QUEUE_URL,
    "SCHEDULER_EVENTBRIDGE__ROLE_ARN": ROLE_ARN,
}


@pytest.mark.parametrize("name", ["default.toml", "local.toml"])
async def test_development_configs_pass_check_config(name: str, tmp_path: Path) -> None:
    result = await run_cli("--config", str(CONFIG_DIR / name), "check-config", cwd=tmp_path)
    assert result.code == 0, result
    config = json.loads(result.stdout)
    assert config["http"]["host"] == "127.0.0.1"
    assert config["scheduling"]["backend"] == "postgres"


async def test_production_config_with_the_deployment_env(tmp_path: Path) -> None:
    result = await run_cli("check-config", env=DEPLOYMENT_ENV, cwd=tmp_path)
    assert result.code == 0, result
    config = json.loads(result.stdout)

    assert config["http"]["host"] == "0.0.0.0"
    assert config["http"]["port"] == 8080
    assert config["http"]["allow_anonymous"] is False
    assert [(t["name"], t["role"]) for t in config["http"]["tokens"]] == [("ops", "admin")]
    assert config["log"]["format"] == "json"
    assert config["scheduling"]["backend"] == "eventbridge"
    assert config["sqs"]["queue_url"] == QUEUE_URL
    assert config["eventbridge"]["role_arn"] == ROLE_ARN
    assert config["webhook"]["allow_private_networks"] is False
    # Below the ECS stopTimeout (120 s): the daemon exits before SIGKILL.
    assert 0 < config["shutdown"]["grace_s"] < 120
    assert config["executor"]["heartbeat_s"] < config["executor"]["lease_s"]
    assert config["database"]["url"] == "postgresql://scheduler:***@db.internal:5432/scheduler"
    # Secrets from the environment are never printed.
    for secret in (DB_PASSWORD, TOKEN):
        assert secret not in result.stdout
        assert secret not in result.stderr


async def test_production_config_via_the_config_option(tmp_path: Path) -> None:
    env = {k: v for k, v in DEPLOYMENT_ENV.items() if k != "SCHEDULER_CONFIG"}
    result = await run_cli("--config", str(PRODUCTION), "check-config", env=env, cwd=tmp_path)
    assert result.code == 0, result
    assert json.loads(result.stdout)["scheduling"]["backend"] == "eventbridge"


def test_production_file_holds_no_secrets() -> None:
    # The database URL and the tokens are secrets: they come from SCHEDULER_DATABASE__URL and
    # SCHEDULER_HTTP__TOKENS (Secrets Manager in ECS), never from the file baked into the image.
    with PRODUCTION.open("rb") as f:
        data = tomllib.load(f)
    assert "url" not in data.get("database", {})
    assert "tokens" not in data.get("http", {})
    assert "endpoint_url" not in data.get("aws", {})


async def test_production_config_without_tokens_is_refused(tmp_path: Path) -> None:
    # Without SCHEDULER_HTTP__TOKENS, 0.0.0.0 would expose the whole API anonymously.
    result = await run_cli("check-config", env={"SCHEDULER_CONFIG": str(PRODUCTION)}, cwd=tmp_path)
    assert result.code == 1, result
    assert result.stdout == ""
    assert "http.tokens" in result.stderr, result.stderr
    assert "'0.0.0.0'" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("unset", "missing"),
    [
        (
            ["SCHEDULER_SQS__QUEUE_URL", "SCHEDULER_EVENTBRIDGE__ROLE_ARN"],
            ["sqs.queue_url", "eventbridge.role_arn"],
        ),
        (["SCHEDULER_SQS__QUEUE_URL"], ["sqs.queue_url"]),
        (["SCHEDULER_EVENTBRIDGE__ROLE_ARN"], ["eventbridge.role_arn"]),
    ],
)
async def test_production_config_without_the_aws_env_names_the_missing_keys(
    unset: list[str], missing: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in DEPLOYMENT_ENV.items() if k not in unset}
    result = await run_cli("check-config", env=env, cwd=tmp_path)
    assert result.code == 1, result
    assert result.stdout == ""
    assert "invalid config" in result.stderr, result.stderr
    assert "'eventbridge'" in result.stderr, result.stderr
    for key in ("sqs.queue_url", "eventbridge.role_arn"):
        assert (key in result.stderr) == (key in missing), (key, result.stderr)
