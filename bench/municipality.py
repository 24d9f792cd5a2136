"""The organisation policy's cost (issue 14): the read and search scenarios as a municipality's client
(its organisation one seeded Organization, not region-wide, so every query carries the visibility
condition of gateway/store/visibility.py `ForOrganisation`) beside the same requests from the region-wide
client, both with auth and audit on.

The municipality is org-ORGANIZATION (HSA-id `SE2321000016-{k:04d}`). Its patients are those the seed
relates it to (it owns their Task or requests their DeviceRequest: `care_relation` rows the seeder keeps
as the write path would); before measuring, `check` asks the server as both clients that it sees exactly
those patients and the same Tasks as the region."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine, and_, func, select

from bench.load import Request as LoadRequest
from bench.load import Result
from bench.seed import family
from gateway.security import store
from gateway.security.cli import assertion, public_jwks
from gateway.store.relations import CR, RESOURCE

ORGANIZATION = 7
CLIENT_ID = "bench-municipality"
SCOPES = ["system/*.rs"]
HIDDEN = "read Patient by id, not related (404)"


@dataclass(frozen=True)
class Municipality:
    index: int
    patients: tuple[str, ...]  # related: it owns their Task or requests their DeviceRequest
    hidden: tuple[str, ...]  # every seeded Patient it is not related to
    related: int  # the patients it is related to (also by the Tasks the benchmark created)

    @property
    def organization(self) -> str:
        return f"org-{self.index}"

    @property
    def hsa(self) -> str:
        return f"SE2321000016-{self.index:04d}"


@dataclass(frozen=True)
class Scenario:
    name: str
    make: LoadRequest
    municipality_expects: int | None  # the status every answer must have; None: any below 400


def find(engine: Engine, index: int = ORGANIZATION) -> Municipality:
    """The seeded organisation `index`, the patients the seed relates it to (it owns their seeded Task or
    requests their DeviceRequest) and the patients it is not related to at all (`care_relation`)."""
    organisation = and_(CR.c.actor_type == "Organization", CR.c.actor_id == f"org-{index}")
    with engine.connect() as connection:
        related = connection.execute(
            select(CR.c.patient_id, RESOURCE.c.res_id)
            .join(RESOURCE, RESOURCE.c.rid == CR.c.rid)
            .where(organisation)
        ).all()
        count = connection.execute(
            select(func.count()).select_from(RESOURCE).where(RESOURCE.c.res_type == "Patient")
        ).scalar_one()
    seeded = {str(patient) for patient, source in related if str(source).startswith(("task-", "dr-"))}
    if not seeded:
        raise RuntimeError(f"org-{index} is related to no patient: the seed wrote no care relations")
    anyhow = {str(patient) for patient, _ in related}
    patients = tuple(sorted(seeded, key=lambda p: int(p.removeprefix("pat-"))))
    hidden = tuple(f"pat-{n}" for n in range(int(count)) if f"pat-{n}" not in anyhow)
    return Municipality(index, patients, hidden, len(anyhow))


def register(engine: Engine, key: Path, municipality: Municipality) -> None:
    """Its client: acts for the organisation's HSA-id, may read and search everything (`system/*.rs`);
    the bench's key (made by seed_demo)."""
    private = json.loads(key.read_text(encoding="utf-8"))
    name = f"Bench municipality {municipality.organization}"
    if store.get_client(engine, CLIENT_ID) is None:
        store.add_client(engine, name, municipality.hsa, public_jwks(private), SCOPES, CLIENT_ID)


def token(base: str, key: Path, client_id: str, scope: str = "system/*.rs") -> str:
    """An access token for `client_id` (its key at `key`), got the SMART Backend Services way."""
    private = json.loads(key.read_text(encoding="utf-8"))
    endpoint = f"{base}/auth/token"
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(client_id, private, endpoint),
    }
    response = httpx.post(endpoint, data=form, timeout=10)
    response.raise_for_status()
    access: str = response.json()["access_token"]
    return access


def scenarios(municipality: Municipality) -> list[Scenario]:
    """The same requests for both clients: reads of its patients and of others, its Tasks, its patients'
    DeviceRequests with their Provenance, and its patients looked up by family name."""
    rng = random.Random(14)
    own, hidden = municipality.patients, municipality.hidden
    owner = f"Organization/{municipality.organization}"

    def by_name(n: int) -> tuple[str, str, None]:
        number = int(rng.choice(own).removeprefix("pat-"))
        return "GET", f"/fhir/Patient?family={family(number)}&_count=10", None

    return [
        Scenario("read Patient by id", lambda n: ("GET", f"/fhir/Patient/{rng.choice(own)}", None), 200),
        Scenario(HIDDEN, lambda n: ("GET", f"/fhir/Patient/{rng.choice(hidden)}", None), 404),
        Scenario(
            "search Task?owner=X&status=requested",
            lambda n: ("GET", f"/fhir/Task?owner={owner}&status=requested", None),
            200,
        ),
        Scenario(
            "search DeviceRequest?patient=Y&_revinclude=Provenance:target",
            lambda n: (
                "GET",
                f"/fhir/DeviceRequest?patient={rng.choice(own)}&_revinclude=Provenance:target",
                None,
            ),
            200,
        ),
        Scenario("search Patient?family=Z&_count=10", by_name, 200),
    ]


def check(base: str, region: str, municipal: str, municipality: Municipality) -> None:
    """Ask the server, as both clients, that the municipality sees its patients and no others, and the
    same Tasks it owns as the region sees: else the figures would measure empty answers."""

    def get(access: str, path: str) -> httpx.Response:
        return httpx.get(f"{base}/fhir/{path}", headers={"Authorization": f"Bearer {access}"}, timeout=30)

    def total(access: str, path: str) -> int:
        response = get(access, path)
        response.raise_for_status()
        return int(response.json()["total"])

    failures = []
    if total(municipal, "Patient?_summary=count") != municipality.related:
        failures.append("it does not see exactly its related patients")
    if get(municipal, f"Patient/{municipality.patients[0]}").status_code != 200:
        failures.append(f"it cannot read its patient {municipality.patients[0]}")
    if get(municipal, f"Patient/{municipality.hidden[0]}").status_code != 404:
        failures.append(f"it reads {municipality.hidden[0]}, a patient it is not related to")
    tasks = f"Task?owner=Organization/{municipality.organization}&status=requested&_summary=count"
    if total(municipal, tasks) != total(region, tasks) or not total(region, tasks):
        failures.append("it does not see the requested Tasks it owns")
    if not total(municipal, "DeviceRequest?_summary=count"):
        failures.append("it sees no DeviceRequest")
    if failures:
        raise RuntimeError(f"municipality {municipality.organization}: " + "; ".join(failures))


Measure = Callable[[str, LoadRequest, dict[str, str], int | None], Result]


def run(
    base: str, key: Path, region_client: str, municipality: Municipality, measure: Measure
) -> list[tuple[Result, Result]]:
    """Each scenario as the region-wide client, then as the municipality: (region, municipality)."""
    check(base, token(base, key, region_client), token(base, key, CLIENT_ID), municipality)
    pairs = []
    for scenario in scenarios(municipality):
        region = {"Authorization": f"Bearer {token(base, key, region_client)}"}
        municipal = {"Authorization": f"Bearer {token(base, key, CLIENT_ID)}"}
        region_expects = None if scenario.name == HIDDEN else scenario.municipality_expects
        pairs.append(
            (
                measure(f"{scenario.name} (region-wide)", scenario.make, region, region_expects),
                measure(
                    f"{scenario.name} (municipality)", scenario.make, municipal, scenario.municipality_expects
                ),
            )
        )
    return pairs


def section(municipality: Municipality, pairs: list[tuple[Result, Result]]) -> list[str]:
    """The report's table: each scenario's rate for both clients, their ratio and p95s."""
    related, seeded = municipality.related, municipality.related + len(municipality.hidden)
    lines = [
        "The cost of the organisation policy (issue 14): the same reads and searches, auth + audit on,",
        "as the region-wide client and as a municipality's client, whose every query carries the",
        f"visibility condition. It acts for {municipality.organization} "
        f"(HSA-id `{municipality.hsa}`), related to {related} of {seeded} patients;",
        f"the requests name the {len(municipality.patients)} of them whose seeded Task it owns or "
        "DeviceRequest it requests, its",
        "Tasks, those patients' family names; the second line reads patients it is not related to (the",
        "region-wide client reads them). Errors: answers other than expected (200; for the municipality's",
        "hidden reads 404).",
        "",
        "| scenario | region-wide req/s | municipality req/s | ratio | p95 ms region-wide "
        "| p95 ms municipality | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for region, municipal in pairs:
        ratio = municipal.per_second / region.per_second if region.per_second else 0
        lines.append(
            f"| {region.name.removesuffix(' (region-wide)')} | {region.per_second:.0f} "
            f"| {municipal.per_second:.0f} | {ratio:.2f} | {region.p95_ms:.1f} | {municipal.p95_ms:.1f} "
            f"| {region.errors + municipal.errors} |"
        )
    lines.append("")
    return lines
