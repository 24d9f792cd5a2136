"""SMART scope grammar (v2 and v1), what scopes permit, and which requested scopes a registration covers."""

from __future__ import annotations

import pytest

from gateway.security.scopes import grant, grants, parse_resource_scope


@pytest.mark.parametrize(
    ("scope", "permissions"),
    [
        ("system/Task.cruds", "cruds"),
        ("system/Task.rs", "rs"),
        ("user/*.cu", "cu"),
        ("system/Patient.read", "rs"),
        ("system/Patient.write", "cud"),
        ("system/*.*", "cruds"),
    ],
)
def test_resource_scopes_parse(scope: str, permissions: str) -> None:
    parsed = parse_resource_scope(scope)
    assert parsed is not None
    assert parsed.permissions == frozenset(permissions)


@pytest.mark.parametrize(
    "scope",
    ["system/Task.sr", "system/Task.rr", "system/Task.x", "system/task.r", "Task.r", "system/Task.rs?x=1"],
)
def test_malformed_scopes_permit_nothing(scope: str) -> None:
    assert parse_resource_scope(scope) is None
    assert not grants(frozenset({scope})).permits("Task", "r")


def test_patient_scopes_permit_nothing_without_a_patient_context() -> None:
    assert not grants(frozenset({"patient/*.rs"})).permits("Observation", "r")


def test_wildcard_and_plain_scopes() -> None:
    found = grants(frozenset({"system/*.rs", "gateway/audit.read"}))
    assert found.permits("Device", "s") and not found.permits("Device", "c")
    assert found.has("gateway/audit.read") and not found.has("gateway/adapter.hl7v2")


def test_grant_keeps_what_the_registration_covers() -> None:
    registered = ["system/*.read", "system/Task.cu", "gateway/adapter.hl7v2"]
    requested = [
        "system/Patient.rs",
        "system/Task.cud",
        "system/Task.c",
        "user/Task.r",
        "gateway/adapter.hl7v2",
    ]
    assert grant(requested, registered) == ["system/Patient.rs", "system/Task.c", "gateway/adapter.hl7v2"]
