"""The installation's key secret (docs/security.md, "The gateway's signing keys"): GATEWAY_KEY_SECRET, or
the file GATEWAY_KEY_SECRET_FILE names (a compose or Kubernetes secret), read and never made; with auth
on and PostgreSQL the gateway does not start without one of the two (the development secret generated
into the data directory is for SQLite and trials)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.config import Settings
from gateway.security.endpoints import StartupRefused, check_key_secret
from gateway.security.sealing import key_secret

# Never connected to: the refusal comes before anything touches the database.
POSTGRES = "postgresql+psycopg://gateway@127.0.0.1:9/gateway"
BASE = "https://fhir.example.se/fhir"


def settings(tmp_path: Path, **values: object) -> Settings:
    given: dict[str, object] = {"database_url": POSTGRES, "auth": True, "base_url": BASE}
    given["data_dir"] = tmp_path / "data"
    given.update(values)
    return Settings(**given)  # type: ignore[arg-type]


def test_postgresql_with_auth_on_and_no_secret_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(StartupRefused, match="GATEWAY_KEY_SECRET is not set") as refused:
        check_key_secret(settings(tmp_path))
    assert "GATEWAY_KEY_SECRET_FILE" in str(refused.value)
    assert not (tmp_path / "data").exists()  # no development secret made


@pytest.mark.parametrize(
    "values",
    [
        {"key_secret": "the installation's secret"},
        {"auth": False},
        {"database_url": "sqlite:///gateway.db"},
    ],
    ids=["secret set", "auth off", "sqlite"],
)
def test_a_secret_auth_off_or_sqlite_starts(tmp_path: Path, values: dict[str, object]) -> None:
    check_key_secret(settings(tmp_path, **values))


def test_the_secret_file_named_is_the_secret(tmp_path: Path) -> None:
    secret = tmp_path / "run" / "gateway_key_secret"
    secret.parent.mkdir()
    secret.write_text("  from the secret store\n", encoding="utf-8")
    named = settings(tmp_path, key_secret_file=secret)
    check_key_secret(named)
    assert key_secret(named) == "from the secret store"
    assert key_secret(named.replace(auth=False)) == "from the secret store"  # still named after replace
    assert key_secret(named.replace(key_secret="set")) == "set"  # GATEWAY_KEY_SECRET comes first


@pytest.mark.parametrize("content", [None, " \n"], ids=["missing", "empty"])
@pytest.mark.parametrize("database_url", [POSTGRES, "sqlite:///gateway.db"], ids=["postgresql", "sqlite"])
def test_a_secret_file_named_without_a_secret_does_not_start(
    tmp_path: Path, content: str | None, database_url: str
) -> None:
    """Whatever the database: a named file is the installation's secret, never generated in its place."""
    secret = tmp_path / "gateway_key_secret"
    if content is not None:
        secret.write_text(content, encoding="utf-8")
    named = settings(tmp_path, key_secret_file=secret, database_url=database_url, auth=False)
    with pytest.raises(StartupRefused, match=f"GATEWAY_KEY_SECRET_FILE names {secret}"):
        check_key_secret(named)
    with pytest.raises(ValueError, match="GATEWAY_KEY_SECRET_FILE"):
        key_secret(named)
    assert secret.exists() == (content is not None)


def test_the_development_secret_is_made_where_no_file_is_named(tmp_path: Path) -> None:
    development = settings(tmp_path, database_url="sqlite:///gateway.db")
    assert key_secret(development) == key_secret(development)
    assert (tmp_path / "data" / "key-secret").is_file()


@pytest.mark.parametrize("command", [["serve", "--no-upgrade"], ["mllp", "--no-upgrade"]])
def test_the_commands_refuse_with_exit_status_2(tmp_path: Path, command: list[str]) -> None:
    env = {
        "DATABASE_URL": POSTGRES,
        "GATEWAY_AUTH": "on",
        "GATEWAY_BASE_URL": BASE,
        "GATEWAY_KEY_SECRET": "",  # empty: unset, whatever the runner's environment has
        "GATEWAY_KEY_SECRET_FILE": "",
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
    }
    result = CliRunner().invoke(cli, command, env=env)
    assert result.exit_code == 2, result.output
    assert "GATEWAY_KEY_SECRET is not set" in result.output
    assert not (tmp_path / "data").exists()
