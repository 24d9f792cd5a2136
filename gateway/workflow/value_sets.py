"""ValueSets the workflow decides with, read from profiles/ (GATEWAY_PROFILES_DIR) at start-up: a
ValueSet's codes are those its `compose.include` lists (`concept`), or every concept of a CodeSystem in
profiles/ it includes whole; `compose.exclude` takes codes out. Editing the file (and restarting)
configures the workflow; a ValueSet that is missing is empty."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.model.types import Json, loads

Code = tuple[str, str]


@dataclass(frozen=True)
class Codes:
    """The codes of one ValueSet, with their displays."""

    url: str
    displays: dict[Code, str]

    def __contains__(self, code: object) -> bool:
        return code in self.displays

    def find(self, concept: object) -> list[tuple[Code, str]]:
        """The codings of a CodeableConcept that are in the ValueSet: (code, display as written, else the
        ValueSet's)."""
        codings = concept.get("coding") if isinstance(concept, dict) else None
        found: list[tuple[Code, str]] = []
        for coding in codings if isinstance(codings, list) else []:
            if not isinstance(coding, dict):
                continue
            code = (str(coding.get("system")), str(coding.get("code")))
            if code in self.displays:
                found.append((code, str(coding.get("display") or self.displays[code])))
        return found


def _resources(profiles_dir: Path | None) -> list[Json]:
    if profiles_dir is None or not profiles_dir.is_dir():
        return []
    found: list[Json] = []
    for path in sorted(profiles_dir.rglob("*.json")):
        try:
            data: Any = loads(path.read_bytes())
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("resourceType") in ("ValueSet", "CodeSystem"):
            found.append(data)
    return found


def _concepts(concepts: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for concept in concepts if isinstance(concepts, list) else []:
        if isinstance(concept, dict) and concept.get("code"):
            found[str(concept["code"])] = str(concept.get("display") or concept["code"])
            found |= _concepts(concept.get("concept"))
    return found


def load(profiles_dir: Path | None, url: str) -> Codes:
    """The codes of the ValueSet `url` in `profiles_dir`."""
    resources = _resources(profiles_dir)
    systems = {
        str(r.get("url")): _concepts(r.get("concept")) for r in resources if r["resourceType"] == "CodeSystem"
    }
    value_set = next((r for r in resources if r["resourceType"] == "ValueSet" and r.get("url") == url), None)
    compose = (value_set or {}).get("compose") or {}

    def codes(part: str) -> dict[Code, str]:
        found: dict[Code, str] = {}
        for include in compose.get(part) or []:
            system = str(include.get("system") or "")
            listed = _concepts(include.get("concept"))
            whole = systems.get(system, {})
            for code, display in (listed or whole).items():
                found[(system, code)] = whole.get(code, display) if not listed else display
        return found

    excluded = codes("exclude")
    return Codes(url, {code: display for code, display in codes("include").items() if code not in excluded})
