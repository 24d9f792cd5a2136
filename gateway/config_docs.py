"""The table of environment variables in docs/operations.md, generated from the Settings class (its
fields' variables, defaults and descriptions): `make settings-docs` writes it, and a test fails when the
table there differs from what this makes (tests/unit/test_settings_docs.py).

    python -m gateway.config_docs            # print the table
    python -m gateway.config_docs --write    # replace it in docs/operations.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from gateway.config import Settings

BEGIN = "<!-- settings table: generated from gateway/config.py by `make settings-docs`; do not edit -->"
END = "<!-- end of settings table -->"
OPERATIONS = Path("docs") / "operations.md"


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value: Any = field.get_default(call_default_factory=False)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value in (None, "", ()):
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return f"`{value}`"


def table() -> str:
    """The Markdown table: one row a variable, in the order of the fields."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{Settings.env_name(name)}` | {_default(field)} | {meaning} |")
    return "\n".join(rows) + "\n"


def replaced(document: str) -> str:
    """`document` with the text between the markers replaced by the table."""
    start, end = document.index(BEGIN) + len(BEGIN), document.index(END)
    return document[:start] + "\n" + table() + document[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help="replace the table in docs/operations.md")
    parser.add_argument("--file", type=Path, default=OPERATIONS, help="the document (docs/operations.md)")
    arguments = parser.parse_args(argv)
    if not arguments.write:
        sys.stdout.write(table())
        return 0
    document = arguments.file.read_text(encoding="utf-8")
    arguments.file.write_text(replaced(document), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
