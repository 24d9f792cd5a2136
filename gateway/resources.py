"""Where the gateway's run-time data is: the one lookup of the packaged mappings, profiles, default access
policy and R4 definitions (importlib.resources: the wheel carries them, the editable install maps them
onto the checkout, setup.py), and of the directories configuration names instead.

Settings (gateway/config.py) default to the packaged ones; the mapping tables, loaded once per process
before any Settings is at hand, follow the environment here (`GATEWAY_MAPPINGS_DIR`,
`GATEWAY_HL7V2_MAPPINGS`, `GATEWAY_RISK_RULES`). Nothing is ever written here: writable defaults are under
the data directory (`GATEWAY_DATA_DIR`)."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

DATA_PACKAGE = "gateway._data"
# The environment variables of the Settings fields of the same meaning (config.py; a test checks them).
MAPPINGS_DIR_VARIABLE = "GATEWAY_MAPPINGS_DIR"
HL7V2_MAPPINGS_VARIABLE = "GATEWAY_HL7V2_MAPPINGS"
RISK_RULES_VARIABLE = "GATEWAY_RISK_RULES"


def _directory(package: str) -> Path:
    """A package's directory on disk. The gateway is installed unzipped (a wheel, or editable), so each is
    a real directory; anything else is a broken installation, said so."""
    found = files(package)
    if not isinstance(found, Path) or not found.is_dir():
        raise RuntimeError(f"{package} is not a directory on disk ({found!r}): install the gateway unzipped")
    return found


def packaged_mappings() -> Path:
    """The packaged mapping tables (the repository's mappings/)."""
    return _directory(f"{DATA_PACKAGE}.mappings")


def packaged_profiles() -> Path:
    """The packaged FHIR definitions of this gateway (the repository's profiles/)."""
    return _directory(f"{DATA_PACKAGE}.profiles")


def packaged_access_policy() -> Path:
    """The packaged default organisation policy (the repository's policy/access.yaml)."""
    return _directory(f"{DATA_PACKAGE}.policy") / "access.yaml"


def definitions() -> Path:
    """The extracted R4 definitions (gateway/definitions, scripts/extract_definitions.py)."""
    return _directory("gateway") / "definitions"


def _configured(variable: str) -> Path | None:
    value = os.environ.get(variable, "").strip()
    return Path(value) if value else None


def mappings_dir() -> Path:
    """The mapping tables in use: `GATEWAY_MAPPINGS_DIR`, else the packaged ones."""
    return _configured(MAPPINGS_DIR_VARIABLE) or packaged_mappings()


def hl7v2_mappings_dir() -> Path:
    """The HL7 v2 tables: `GATEWAY_HL7V2_MAPPINGS`, else hl7v2/ of the mapping tables in use."""
    return _configured(HL7V2_MAPPINGS_VARIABLE) or mappings_dir() / "hl7v2"


def risk_rules_file() -> Path:
    """The high-risk rule set: `GATEWAY_RISK_RULES`, else risk/rules.yaml of the mapping tables in use."""
    return _configured(RISK_RULES_VARIABLE) or mappings_dir() / "risk" / "rules.yaml"
