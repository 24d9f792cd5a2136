"""docs/operations.md's table of environment variables is the one the settings class generates
(gateway/config_docs.py): a field added, renamed or re-described without `make settings-docs` fails here."""

from __future__ import annotations

from pathlib import Path

from gateway import config_docs, resources
from gateway.config import Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_the_table_in_the_docs_is_the_generated_one() -> None:
    document = OPERATIONS.read_text(encoding="utf-8")
    assert config_docs.replaced(document) == document, (
        "run `make settings-docs` and commit docs/operations.md"
    )


def test_every_variable_has_a_row_and_the_table_says_where_it_comes_from() -> None:
    table = config_docs.table()
    for name in Settings.model_fields:
        assert f"| `{Settings.env_name(name)}` |" in table
    for variable in ("DATABASE_URL", "DATABASE_SCHEMA", "GATEWAY_TIMEZONE", "GATEWAY_MAX_PAGE_SIZE"):
        assert f"| `{variable}` |" in table


def test_the_mapping_variables_are_the_settings_ones() -> None:
    """resources.py reads three path variables itself (the tables load before any Settings exists)."""
    assert Settings.env_name("mappings_dir") == resources.MAPPINGS_DIR_VARIABLE
    assert Settings.env_name("hl7v2_mappings") == resources.HL7V2_MAPPINGS_VARIABLE
    assert Settings.env_name("risk_rules") == resources.RISK_RULES_VARIABLE
