"""Settings (gateway/config.py): the environment as operators write it, typed and validated at start with
a message naming the variable; Settings(...) in code never reads the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import ConfigurationError, Settings

GATEWAY = Path(sys.executable).parent / "gateway"


def test_settings_in_code_are_the_defaults_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUTH", "off")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    settings = Settings(database_schema="s1")
    assert settings.auth is True
    assert settings.database_url != "sqlite:///elsewhere.db"
    assert settings.database_schema == "s1"
    assert Settings.from_env().auth is False


def test_every_variable_name_and_form(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {
        "DATABASE_URL": "postgresql+psycopg://db/gw",
        "DATABASE_SCHEMA": "region",
        "GATEWAY_TIMEZONE": "UTC",
        "GATEWAY_BASE_URL": "https://gw.example/fhir/",
        "GATEWAY_AUTH_ISSUER": "https://gw.example/auth/",
        "GATEWAY_REGION_CLIENTS": " journal, ,other ",
        "GATEWAY_MAX_PAGE_SIZE": "200",
        "GATEWAY_STATEMENT_TIMEOUT": "2.5",
        "GATEWAY_AUDIT": "no",
        "GATEWAY_NOTIFY": "0",
        "GATEWAY_ORGANISATION_POLICY": "YES",
        "GATEWAY_MLLP_PORT": "2575",
        "GATEWAY_MLLP_HOST": "",  # empty: the default
        "GATEWAY_NOW": " 2026-01-01T00:00:00Z ",
        "GATEWAY_PROFILES_DIR": "/srv/profiles",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.database_url == "postgresql+psycopg://db/gw"
    assert settings.database_schema == "region"
    assert settings.local_timezone == "UTC"
    assert settings.base_url == "https://gw.example/fhir"
    assert settings.auth_issuer == "https://gw.example/auth"
    assert settings.region_clients == ("journal", "other")
    assert settings.max_page_size == 200
    assert settings.statement_timeout == 2.5
    assert (settings.audit, settings.notify, settings.organisation_policy) == (False, False, True)
    assert settings.mllp_port == 2575
    assert settings.mllp_host == "127.0.0.1"
    assert settings.now == "2026-01-01T00:00:00Z"
    assert settings.profiles_dir == Path("/srv/profiles")
    for empty in ("", "0"):
        monkeypatch.setenv("GATEWAY_MLLP_PORT", empty)
        assert Settings.from_env().mllp_port is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GATEWAY_MAX_PAGE_SIZE", "abc", "GATEWAY_MAX_PAGE_SIZE: must be an integer, not 'abc'"),
        ("GATEWAY_STATEMENT_TIMEOUT", "soon", "GATEWAY_STATEMENT_TIMEOUT: must be a number, not 'soon'"),
        ("GATEWAY_AUTH", "maybe", "GATEWAY_AUTH: must be on or off"),
        ("GATEWAY_AUDIT", "t", "GATEWAY_AUDIT: must be on or off"),  # pydantic's own lax forms refused
        ("GATEWAY_MLLP_PORT", "x", "GATEWAY_MLLP_PORT: must be an integer, not 'x'"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env()
    assert str(raised.value).startswith(message)


def test_settings_are_immutable_and_replace_validates() -> None:
    settings = Settings(auth=False)
    with pytest.raises(ValidationError):
        settings.auth = True
    changed = settings.replace(max_page_size=10, region_clients=["a"])
    assert (changed.max_page_size, changed.region_clients, changed.auth) == (10, ("a",), False)
    assert settings.max_page_size == 1000
    assert settings.for_batch().audit_waits is True
    with pytest.raises(ValidationError):
        settings.replace(max_page_size="many")
    with pytest.raises(ValidationError):
        Settings(max_pagesize=10)  # type: ignore[call-arg]


def test_every_field_has_a_description() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_the_command_prints_the_variable_and_exits_2(tmp_path: Path) -> None:
    """`gateway serve` (and every other command) refuses a bad setting without a traceback."""
    environment = {**os.environ, "GATEWAY_MAX_PAGE_SIZE": "abc", "GATEWAY_DATA_DIR": str(tmp_path)}
    for command in (["serve"], ["db", "upgrade"]):
        done = subprocess.run(
            [str(GATEWAY), *command],
            check=False,
            env=environment,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "GATEWAY_MAX_PAGE_SIZE: must be an integer, not 'abc'" in done.stderr
        assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
