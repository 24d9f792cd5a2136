"""The high-risk rule set, read from mappings/risk/rules.yaml (of GATEWAY_MAPPINGS_DIR, else the packaged
tables; GATEWAY_RISK_RULES names another file):
each rule's kind, what it reads, its weight, its Swedish explanation and its parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gateway import resources

KINDS = frozenset(
    {"living-situation", "condition", "no-help-at-home", "fhirpath", "age", "devices", "device-class"}
)
Code = tuple[str, str]


@dataclass(frozen=True)
class Rule:
    code: str
    kind: str
    weight: int
    explanation: str
    reads_type: str
    reads_param: str | None
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def codes(self, key: str) -> frozenset[Code]:
        return frozenset((str(c["system"]), str(c["code"])) for c in self.params.get(key) or [])


@dataclass(frozen=True)
class RuleSet:
    name: str
    version: str
    threshold: int
    rules: tuple[Rule, ...]

    def read_types(self) -> frozenset[str]:
        """What a write must be of for the rules' outcome to change (the reaction's trigger)."""
        types = {rule.reads_type for rule in self.rules}
        if any(rule.kind in ("devices", "device-class") for rule in self.rules):
            types |= {"Device", "DeviceRequest", "DeviceUseStatement"}
        return frozenset(types)


def parse(data: Any) -> RuleSet:
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ValueError("the risk rules need `name`, `version`, `threshold` and a list of `rules`")
    rules = []
    for item in data["rules"]:
        kind = str(item.get("kind"))
        if kind not in KINDS:
            raise ValueError(f"risk rule {item.get('code')}: unknown kind {kind!r} (one of {sorted(KINDS)})")
        reads = item.get("reads") or {}
        known = {"code", "kind", "weight", "explanation", "reads"}
        rules.append(
            Rule(
                code=str(item["code"]),
                kind=kind,
                weight=int(item.get("weight", 1)),
                explanation=str(item["explanation"]),
                reads_type=str(reads.get("type", "Patient")),
                reads_param=str(reads["param"]) if reads.get("param") else None,
                params={k: v for k, v in item.items() if k not in known},
            )
        )
    return RuleSet(str(data["name"]), str(data["version"]), int(data.get("threshold", 1)), tuple(rules))


@cache
def load(path: Path | None = None) -> RuleSet:
    chosen = path or resources.risk_rules_file()
    return parse(yaml.safe_load(chosen.read_text(encoding="utf-8")))
