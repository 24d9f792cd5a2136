"""What one Beställningsportalen order is known by and names: the portal and source it comes from, its
version, the ids of its own resources (`OrderIds`: UUIDs from an HMAC under the installation's secret,
gateway/adapters/ids.py, from the portal, the order number and what the resource is of the order), the
identifiers of the patient, units, persons and devices it names; and `Known`, what the gateway holds of
these, read before the order's Bundle is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.adapters import mapping as m
from gateway.adapters.ids import SourceIds
from gateway.adapters.mapping import Found
from gateway.model.types import Json

SOURCE = "bestallningsportalen"
SOURCE_VERSION = f"{m.EXT}/source-version"


@dataclass
class Known:
    """What the gateway holds that this order touches, read before the Bundle is built."""

    patient: Found | None = None
    organizations: dict[str, Found] = field(default_factory=dict)  # by HSA-id
    practitioners: dict[str, Found] = field(default_factory=dict)  # by HSA-id
    roles: dict[str, Found] = field(default_factory=dict)  # by "person@unit"
    devices: dict[tuple[str, str], Found] = field(default_factory=dict)  # by (system, value)
    by_id: dict[str, Found] = field(default_factory=dict)  # "Type/id" of this order's own resources
    lines: dict[str, Found] = field(default_factory=dict)  # this order's DeviceRequests by id


def portal_of(order: Json) -> str:
    """The portal an order comes from: the installation's (source.yaml `portal_id`). Orders name none:
    one installation takes one portal's orders, whose numbers share one identifier system."""
    return str(m.tables(SOURCE)["portal_id"])


def source_of(order: Json) -> str:
    """The order's source, as clients are bound to it: `bestallningsportalen:<portal id>`."""
    return f"{SOURCE}:{portal_of(order)}"


@dataclass(frozen=True)
class OrderIds:
    """The ids of one order's own resources, each from (portal, ordernummer, what it is of the order)."""

    ids: SourceIds
    portal: str
    ordernummer: str

    def _of(self, *part: str) -> str:
        return self.ids.id(SOURCE, self.portal, self.ordernummer, *part)

    @property
    def provenance(self) -> str:
        """Every version of the order writes this Provenance (its source-version says which)."""
        return self._of("provenance")

    def binary(self, version: int) -> str:
        """The raw order of one version."""
        return self._of("binary", str(version))

    def line(self, radnummer: object) -> str:
        """The DeviceRequest of one order line."""
        return self._of("line", str(radnummer))

    @property
    def confirm(self) -> str:
        return self._of("confirm-prescriber")

    @property
    def task(self) -> str:
        return self._of("task")

    @property
    def followup(self) -> str:
        return self._of("followup")

    @property
    def selfcare(self) -> str:
        return self._of("selfcare")


def order_ids(ids: SourceIds, order: Json) -> OrderIds:
    return OrderIds(ids, portal_of(order), str(order["ordernummer"]))


def version_of(order: Json) -> int:
    version = order.get("version", 1)
    return version if isinstance(version, int) else 1


def patient_identifier(order: Json) -> tuple[str, str]:
    patient = order["patient"]
    if patient.get("personnummer") is not None:
        return m.PERSONNUMMER, m.person_number(patient["personnummer"]) or ""
    return m.SAMORDNINGSNUMMER, m.person_number(patient["samordningsnummer"], coordination=True) or ""


def units(order: Json) -> dict[str, str | None]:
    """Every unit (HSA-id → name or None) the order names, the device unit first."""
    device_unit = m.tables(SOURCE)["device_unit"]
    found: dict[str, str | None] = {device_unit["hsaid"]: device_unit["name"]}
    for person in (order.get("forskrivare"), order["registrerad_av"]):
        if person:
            found[person["enhet_hsaid"]] = person.get("enhet_namn") or found.get(person["enhet_hsaid"])
    if order.get("uppfoljning"):
        found.setdefault(order["uppfoljning"]["ansvarig_enhet_hsaid"], None)
    return found


def people(order: Json) -> list[Json]:
    """The persons the order names: the prescriber (when named) and the person who keyed it, once each
    by HSA-id (a prescriber who keyed the order themselves is one person: the prescriber's fields, and
    what only the keying record says)."""
    found: dict[str, Json] = {}
    for person in (order.get("forskrivare"), order["registrerad_av"]):
        if person:
            found[person["hsaid"]] = {**person, **found.get(person["hsaid"], {})}
    return list(found.values())


def extra_practitioners(order: Json) -> list[str]:
    """HSA-ids of persons named only by id (the self-care assessor)."""
    assessor = (order.get("egenvard") or {}).get("bedomd_av_hsaid")
    named = {p["hsaid"] for p in people(order)}
    return [assessor] if assessor and assessor not in named else []


def unit_refs(order: Json) -> list[tuple[str, str]]:
    """(system, individnummer) of the units the order names (lines and hämtorder)."""
    default = m.tables(SOURCE)["default_register"]
    found = [
        (m.unit_system(line.get("register") or default), line["individnummer"])
        for line in order["rader"]
        if line.get("individnummer")
    ]
    if order.get("hamtar_individnummer"):
        found.insert(
            0, (m.unit_system(order.get("hamtar_register") or default), order["hamtar_individnummer"])
        )
    return found
