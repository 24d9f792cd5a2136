"""The mapping tables under mappings/hl7v2/ (data, reviewable without Python), loaded once: from
GATEWAY_HL7V2_MAPPINGS, else hl7v2/ of GATEWAY_MAPPINGS_DIR, else the packaged tables (resources.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import resources
from gateway.model.types import loads

MAPPINGS_DIR = resources.hl7v2_mappings_dir()


@dataclass(frozen=True)
class Mappings:
    triggers: dict[str, Any]
    tasks: dict[str, Any]
    patient: dict[str, Any]
    encounter: dict[str, Any]
    codes: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> Mappings:
        def read(name: str) -> dict[str, Any]:
            document: dict[str, Any] = loads((directory / f"{name}.json").read_bytes())
            return document

        return cls(
            read("triggers")["triggers"],
            read("tasks"),
            read("patient"),
            read("encounter"),
            read("codes"),
        )

    def code(self, table: str, value: str) -> str | None:
        mapped: str | None = self.codes[table]["map"].get(value)
        return mapped

    def deadline_hours(self, kind: str) -> int:
        spec = self.tasks["kinds"][kind]
        value = os.environ.get(spec["env"], "")
        return int(value) if value.strip().lstrip("-").isdigit() else int(spec["hours"])


MAPPINGS = Mappings.load(MAPPINGS_DIR)
