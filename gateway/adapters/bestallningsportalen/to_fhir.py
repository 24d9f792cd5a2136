"""One checked Beställningsportalen order → one transaction Bundle (the mapping; the tables it reads are
in mappings/bestallningsportalen/). Pure: what the gateway already holds comes in as `Known`, read before.

Ids derive from the portal, the order number and what the resource is of the order (`OrderIds`: UUIDs
from an HMAC under the installation's secret, gateway/adapters/ids.py), so a replay writes to the same
resources and an id tells nothing of the order number; master data (Patient, Organization, Practitioner,
PractitionerRole) is found by its identifier and merged (never erased), or created with a conditional
create on that identifier."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from gateway.adapters import mapping as m
from gateway.adapters import master_data
from gateway.adapters.bestallningsportalen import follow_up
from gateway.adapters.ids import SourceIds
from gateway.adapters.mapping import Found
from gateway.model.types import Json

SOURCE = "bestallningsportalen"
SOURCE_VERSION = f"{m.EXT}/source-version"
ORDER_TYPE_EXT = f"{m.EXT}/order-type"
ASSIGNED_UNIT_EXT = f"{m.EXT}/assigned-unit"
ORDER_TAG = {"system": m.TAGS, "code": "bestallningsportalen-order", "display": "Beställningsportalen order"}
UNCONFIRMED = {
    "system": m.TAGS,
    "code": "unconfirmed-prescriber",
    "display": "The requester is the person who keyed the order, assumed to be the prescriber",
}


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


def _split_name(name: str) -> Json:
    words = name.split()
    result: Json = {"text": name}
    if len(words) > 1:
        result["family"] = words[-1]
        result["given"] = words[:-1]
    return result


class Builder(m.BundleBuilder):
    """Collects the Bundle's entries; resolves each resource to the reference other entries use."""

    def __init__(self, order: Json, known: Known, recorded: str, ids: SourceIds) -> None:
        super().__init__(str(order["skapad"]), ids)
        self.order = order
        self.known = known
        self.recorded = recorded
        self.oids = order_ids(ids, order)

    def own(self, resource: Json, target: bool = True) -> str:
        """This order's own resources: deterministic ids, written whole."""
        key = f"{resource['resourceType']}/{resource['id']}"
        return self.entry(self.ids.urn(key), resource, {"method": "PUT", "url": key}, target)

    # -- master data ---------------------------------------------------------------------------------

    def patient(self) -> str:
        source = self.order["patient"]
        system, value = patient_identifier(self.order)
        resource = m.patient(system, value)
        given, family = source.get("fornamn"), source.get("efternamn")
        if given or family:
            name: Json = {"use": "official"}
            if family:
                name["family"] = family
            if given:
                name["given"] = [given]
            name["text"] = " ".join(p for p in (given, family) if p)
            resource["name"] = [name]
        if source.get("telefon"):
            resource["telecom"] = [{"system": "phone", "value": source["telefon"], "use": "home"}]
        address: Json = {}
        if source.get("adress"):
            parts = source["adress"]
            address = {"use": "home", "type": "physical"}
            if parts.get("gata"):
                address["line"] = [parts["gata"]]
            if parts.get("postnummer"):
                address["postalCode"] = parts["postnummer"].replace(" ", "")
            if parts.get("ort"):
                address["city"] = parts["ort"]
            address["country"] = "SE"
        if source.get("kommunkod"):
            coding = {"system": m.KOMMUNKOD, "code": source["kommunkod"]}
            address = {"use": "home", **address}
            address["extension"] = [{"url": master_data.MUNICIPALITY_CODE, "valueCoding": coding}]
        if address:
            resource["address"] = [address]
        return self.master(resource, system, value, self.known.patient)

    def organization(self, hsaid: str, name: str | None) -> str:
        resource = m.organization(hsaid, name)
        return self.master(resource, m.HSA, hsaid, self.known.organizations.get(hsaid))

    def practitioner(self, person: Json) -> str:
        resource: Json = {
            "resourceType": "Practitioner",
            "meta": {"profile": [f"{m.PROFILE}SEBasePractitioner"]},
            "identifier": [{"system": m.HSA, "value": person["hsaid"]}],
        }
        if person.get("namn"):
            resource["name"] = [_split_name(person["namn"])]
        yrke = m.code_map(SOURCE, "yrke").get(person.get("yrke") or "")
        if yrke or person.get("forskrivarkod"):
            qualification: Json = {"code": {"text": yrke["display"] if yrke else "Förskrivare"}}
            if yrke:
                coding = {"system": m.HOSP_YRKE, "code": yrke["code"], "display": yrke["display"]}
                qualification["code"]["coding"] = [coding]
            if person.get("forskrivarkod"):
                qualification["identifier"] = [{"system": m.FORSKRIVARKOD, "value": person["forskrivarkod"]}]
            resource["qualification"] = [qualification]
        return self.master(resource, m.HSA, person["hsaid"], self.known.practitioners.get(person["hsaid"]))

    def role(self, person: Json, practitioner: str, organization: str) -> str:
        key = f"{person['hsaid']}@{person['enhet_hsaid']}"
        resource: Json = {
            "resourceType": "PractitionerRole",
            "meta": {"profile": [f"{m.PROFILE}SEBasePractitionerRole"]},
            "identifier": [{"system": m.PRACTITIONER_ROLE, "value": key}],
            "active": True,
            "practitioner": {**m.ref(practitioner), "display": person["namn"]},
            "organization": m.ref(organization),
        }
        yrke = m.code_map(SOURCE, "yrke").get(person.get("yrke") or "")
        if yrke:
            coding = {"system": m.HOSP_YRKE, "code": yrke["code"], "display": yrke["display"]}
            resource["code"] = [{"coding": [coding], "text": yrke["display"]}]
        return self.master(resource, m.PRACTITIONER_ROLE, key, self.known.roles.get(key))

    def device(self, system: str, value: str) -> str:
        """The unit an order names, by register + individnummer (a stub until the register feeds it)."""
        found = self.known.devices.get((system, value))
        if found is not None:
            return f"Device/{found.res_id}"
        resource = {"resourceType": "Device", "identifier": [{"system": system, "value": value}]}
        request = {"method": "POST", "url": "Device", "ifNoneExist": m.identifier_query(system, value)}
        return self.entry(self.ids.urn("Device", system, value), resource, request)


def _coding(table: str, code: str) -> Json:
    display = m.code_map(SOURCE, table)[code].get("display")
    coding: Json = {"system": f"{m.ORDER_CODES}-{table}", "code": code}
    if display:
        coding["display"] = display
    return coding


def _parameter(code: str, display: str, **value: Any) -> Json:
    return {
        "code": {"coding": [{"system": f"{m.ORDER_CODES}-parameter", "code": code, "display": display}]},
        **value,
    }


def build(order: Json, raw: bytes, known: Known, recorded: str, ids: SourceIds) -> Json:
    """The transaction Bundle for one checked order."""
    b = Builder(order, known, recorded, ids)
    oids, ordernummer, version = b.oids, str(order["ordernummer"]), version_of(order)
    kind = m.code_map(SOURCE, "ordertyp")[order["ordertyp"]]
    status = m.code_map(SOURCE, "status")[order["status"]]
    group = {"system": m.ORDER, "value": ordernummer}

    raw_ref = b.own(
        {
            "resourceType": "Binary",
            "id": oids.binary(version),
            "meta": {"tag": [m.RAW_TAG]},
            "contentType": "application/json",
            "data": base64.b64encode(raw).decode(),
        },
        target=False,
    )
    patient = b.patient()
    orgs = {hsaid: b.organization(hsaid, name) for hsaid, name in units(order).items()}
    device_unit = orgs[m.tables(SOURCE)["device_unit"]["hsaid"]]
    practitioners = {p["hsaid"]: b.practitioner(p) for p in people(order)}
    roles = {p["hsaid"]: b.role(p, practitioners[p["hsaid"]], orgs[p["enhet_hsaid"]]) for p in people(order)}
    orderer = order["registrerad_av"]
    prescriber = order.get("forskrivare")
    entered_by = roles[orderer["hsaid"]]
    if (
        prescriber
        and prescriber["hsaid"] == orderer["hsaid"]
        and prescriber["enhet_hsaid"] != orderer["enhet_hsaid"]
    ):
        # the prescriber keyed it at another unit: their role there entered it
        entered_by = b.role(orderer, practitioners[orderer["hsaid"]], orgs[orderer["enhet_hsaid"]])
    for hsaid in extra_practitioners(order):
        practitioners[hsaid] = b.practitioner({"hsaid": hsaid})
    requester = roles[prescriber["hsaid"]] if prescriber else roles[orderer["hsaid"]]
    requester_display = (prescriber or orderer)["namn"]

    confirm = known.by_id.get(f"Task/{oids.confirm}")
    confirmed = _confirmed_requester(confirm.resource) if confirm else None
    if prescriber is None and confirmed is not None:
        requester, requester_display = confirmed["reference"], confirmed.get("display", "")
    unconfirmed = prescriber is None and confirmed is None

    written_lines: list[str] = []
    supporting: list[Json] = []
    if order.get("egenvard") and kind["resource"] == "DeviceRequest":
        supporting.append(m.ref(_self_care(b, order, status, patient, practitioners, roles)))
    elif kind["resource"] == "DeviceRequest":
        _withdraw(b, "observation", f"Observation/{oids.selfcare}", "egenvårdsbedömning")
    if kind["resource"] == "DeviceRequest":
        for line in order["rader"]:
            written_lines.append(
                _device_request(
                    b,
                    order,
                    line,
                    kind,
                    status,
                    group,
                    patient,
                    requester,
                    requester_display,
                    device_unit,
                    supporting,
                    unconfirmed,
                )
            )
        kept = {oids.line(line["radnummer"]) for line in order["rader"]}
        for res_id, found in known.lines.items():
            if res_id not in kept and found.resource.get("status") != "revoked":  # a withdrawn line
                b.own({**found.resource, "status": "revoked"})
        if order.get("uppfoljning"):
            _follow_up(b, order, status, patient, orgs, written_lines)
        else:
            _withdraw(b, "careplan", f"CarePlan/{oids.followup}", "uppföljningsplan")
        if unconfirmed or (confirm and confirm.resource.get("status") in m.OPEN_TASK):
            _confirm_task(b, order, confirm, unconfirmed, status, group, patient, orgs, written_lines)
    else:
        _work_task(b, order, kind, status, group, patient, requester, device_unit)

    on_behalf = {"onBehalfOf": m.ref(requester, requester_display)} if prescriber else {}
    agents = [
        m.agent("author", m.ref(requester, requester_display)),
        m.agent("enterer", m.ref(entered_by, orderer["namn"]), **on_behalf),
        m.agent("assembler", {"display": f"{m.tables(SOURCE)['source']['name']} (gateway adapter)"}),
    ]
    first = known.by_id.get(f"Provenance/{oids.provenance}")
    operation = "UPDATE" if first else "CREATE"
    provenance = {
        "resourceType": "Provenance",
        "id": oids.provenance,
        "meta": {"tag": [ORDER_TAG]},
        "extension": [{"url": SOURCE_VERSION, "valueInteger": version}],
        "target": [m.ref(t) for t in b.targets],
        "occurredDateTime": b.event,
        "recorded": recorded,
        "activity": {"coding": [{"system": m.V3_OPERATION, "code": operation}]},
        "agent": agents,
        "entity": [
            {
                "role": "source",
                "what": {
                    **m.ref(raw_ref),
                    "display": f"{m.tables(SOURCE)['source']['name']} order {ordernummer} version {version}",
                },
            }
        ],
    }
    b.own(provenance, target=False)
    return {"resourceType": "Bundle", "type": "transaction", "entry": b.entries}


def _confirmed_requester(task: Json) -> Json | None:
    """The prescriber a completed confirm-prescriber Task names, if any."""
    if task.get("status") != "completed":
        return None
    for output in task.get("output", []):
        ref = output.get("valueReference") or {}
        if str(ref.get("reference", "")).startswith("PractitionerRole/"):
            return dict(ref)
    return None


def _device_request(
    b: Builder,
    order: Json,
    line: Json,
    kind: Json,
    status: Json,
    group: Json,
    patient: str,
    requester: str,
    requester_display: str,
    device_unit: str,
    supporting: list[Json],
    unconfirmed: bool,
) -> str:
    ordernummer = str(order["ordernummer"])
    code: Json = {
        "coding": [{"system": m.ARTICLE, "code": str(line["artikelnummer"]), "display": line["benamning"]}],
        "text": line["benamning"],
    }
    if line.get("iso9999"):
        code["coding"].append({"system": m.ISO9999, "code": line["iso9999"]})
    parameters = [_parameter("antal", "Antal", valueQuantity={"value": line["antal"], "unit": "st"})]
    if line.get("installningar"):
        parameters.append(
            _parameter("installningar", "Inställningar", valueCodeableConcept={"text": line["installningar"]})
        )
    delivery = order.get("leverans") or {}
    if delivery.get("satt"):
        concept = {"coding": [_coding("leveranssatt", delivery["satt"])]}
        parameters.append(_parameter("leveranssatt", "Leveranssätt", valueCodeableConcept=concept))
    for condition in delivery.get("villkor") or []:
        concept = {"coding": [_coding("villkor", condition)]}
        parameters.append(_parameter("leveransvillkor", "Villkor för leverans", valueCodeableConcept=concept))
    resource: Json = {
        "resourceType": "DeviceRequest",
        "id": b.oids.line(line["radnummer"]),
        "extension": [{"url": ORDER_TYPE_EXT, "valueCoding": _coding("ordertyp", order["ordertyp"])}],
        "identifier": [{"system": m.ORDER_LINE, "value": f"{ordernummer}:{line['radnummer']}"}],
        "groupIdentifier": group,
        "status": status["request"],
        "intent": kind["intent"],
        "codeCodeableConcept": code,
        "parameter": parameters,
        "subject": m.ref(patient),
        "authoredOn": order["skapad"],
        "requester": m.ref(requester, requester_display),
        "performer": m.ref(device_unit),
    }
    if unconfirmed:
        resource["meta"] = {"tag": [UNCONFIRMED]}
    if line.get("individnummer"):
        default = m.tables(SOURCE)["default_register"]
        system = m.unit_system(line.get("register") or default)
        unit = {"identifier": {"system": system, "value": line["individnummer"]}}
        resource["extension"].append({"url": ASSIGNED_UNIT_EXT, "valueReference": unit})
    if delivery.get("onskat_datum"):
        resource["occurrenceDateTime"] = delivery["onskat_datum"]
    if supporting:
        resource["supportingInfo"] = supporting
    notes = [
        text
        for text in (
            order.get("meddelande"),
            f"Leveransadress: {delivery['adress']}" if delivery.get("adress") else None,
            f"Kostnadsställe: {order['kostnadsstalle']}" if order.get("kostnadsstalle") else None,
        )
        if text
    ]
    if notes:
        resource["note"] = [{"text": text} for text in notes]
    return b.own(resource)


def _self_care(
    b: Builder, order: Json, status: Json, patient: str, practitioners: dict[str, str], roles: dict[str, str]
) -> str:
    care = order["egenvard"]
    resource: Json = {
        "resourceType": "Observation",
        "id": b.oids.selfcare,
        "status": status["observation"],
        "code": {"coding": [{"system": m.SELF_CARE, "code": "assessment", "display": "Egenvårdsbedömning"}]},
        "subject": m.ref(patient),
        "valueCodeableConcept": {
            "coding": [{**_coding("bedomning", care["bedomning"]), "system": m.SELF_CARE}]
        },
    }
    if care.get("datum"):
        resource["effectiveDateTime"] = care["datum"]
    assessor = care.get("bedomd_av_hsaid")
    if assessor:
        resource["performer"] = [m.ref(roles.get(assessor) or practitioners[assessor])]
    handlers = care.get("hanteras_av") or []
    if handlers:
        # One component whose concept lists every handler. One component per handler is the cleaner
        # shape, but the search index cannot yet take two Observation components with values (the
        # official `(Observation.component.value as CodeableConcept)` raises on a collection).
        codings = [{**_coding("hanteras_av", who), "system": m.SELF_CARE} for who in handlers]
        texts = [str(c.get("display", c["code"])) for c in codings]
        resource["component"] = [
            {
                "code": {"coding": [{"system": m.SELF_CARE, "code": "handled-by", "display": "Hanteras av"}]},
                "valueCodeableConcept": {"coding": codings, "text": ", ".join(texts)},
            }
        ]
    return b.own(resource)


def _follow_up(
    b: Builder, order: Json, status: Json, patient: str, orgs: dict[str, str], lines: list[str]
) -> None:
    current = b.known.by_id.get(f"CarePlan/{b.oids.followup}")
    unit = orgs[order["uppfoljning"]["ansvarig_enhet_hsaid"]]
    b.own(
        follow_up.careplan(
            order,
            version_of(order),
            status,
            b.oids.followup,
            patient,
            unit,
            lines,
            current.resource if current else None,
        )
    )


def _withdraw(b: Builder, kind: str, key: str, what: str) -> None:
    """An earlier version's resource (`key`) that this version of the order no longer has: ended with the
    status `withdrawn` in codes.yaml names and a note saying why, never deleted; left as it is when held
    with an ended status already (so a later version writes nothing more)."""
    found = b.known.by_id.get(key)
    rule = m.tables(SOURCE)["withdrawn"][kind]
    if found is None or found.resource.get("status") in rule["ended"]:
        return
    reason = f"Version {version_of(b.order)} av order {b.order['ordernummer']} har inte längre någon {what}"
    resource = {
        **found.resource,
        "status": rule["status"],
        "note": [*found.resource.get("note", []), {"text": reason}],
    }
    if "activity" in resource:
        why = follow_up.reason("plan-withdrawn", reason)
        resource["activity"] = [follow_up.end(activity, why) for activity in resource["activity"]]
    b.own(resource)


def _confirm_task(
    b: Builder,
    order: Json,
    current: Found | None,
    unconfirmed: bool,
    status: Json,
    group: Json,
    patient: str,
    orgs: dict[str, str],
    lines: list[str],
) -> None:
    """Ask the ordering unit who really prescribed; cancel the question once the order names them."""
    if current is not None:
        if unconfirmed and status["task"] != "cancelled":
            return  # the unit is working on it: leave it as it is
        reason = "Ordern anger nu sin förskrivare" if not unconfirmed else "Ordern makulerades"
        b.own({**current.resource, "status": "cancelled", "statusReason": {"text": reason}})
        return
    orderer = order["registrerad_av"]
    b.own(
        {
            "resourceType": "Task",
            "id": b.oids.confirm,
            "groupIdentifier": group,
            "status": "cancelled" if status["task"] == "cancelled" else "requested",
            "intent": "order",
            "code": {
                "coding": [
                    {"system": m.TASK_CODES, "code": "confirm-prescriber", "display": "Bekräfta förskrivare"}
                ]
            },
            "description": (
                f"Order {order['ordernummer']} registrerades av {orderer['namn']} utan att förskrivaren "
                "angavs. Ange vem som förskrev: slutför uppgiften med förskrivarens PractitionerRole som "
                "output (valueReference)."
            ),
            "focus": m.ref(lines[0]),
            "basedOn": [m.ref(line) for line in lines],
            "for": m.ref(patient),
            "authoredOn": order["skapad"],
            "owner": m.ref(orgs[orderer["enhet_hsaid"]]),
        }
    )


def _work_task(
    b: Builder,
    order: Json,
    kind: Json,
    status: Json,
    group: Json,
    patient: str,
    requester: str,
    device_unit: str,
) -> None:
    """hämtorder and arbetsorder: a Task to the device unit, focus the unit concerned."""
    units = unit_refs(order)
    task_id = b.oids.task
    current = b.known.by_id.get(f"Task/{task_id}")
    task_status = status["task"]
    if current is not None and task_status not in ("cancelled", "completed"):
        task_status = current.resource.get("status", task_status)  # the device unit's progress stands
    resource: Json = {
        "resourceType": "Task",
        "id": task_id,
        "groupIdentifier": group,
        "status": task_status,
        "intent": "order",
        "code": {"coding": [{"system": m.TASK_CODES, "code": kind["task_code"], "display": kind["display"]}]},
        "for": m.ref(patient),
        "authoredOn": order["skapad"],
        "requester": m.ref(requester),
        "owner": m.ref(device_unit),
    }
    if units:
        resource["focus"] = m.ref(b.device(*units[0]))
    if order.get("meddelande"):
        resource["description"] = order["meddelande"]
    inputs = [
        {
            "type": {"text": f"rad {line['radnummer']}: {line['benamning']} ({line['artikelnummer']})"},
            "valueString": line.get("installningar") or f"antal {line['antal']}",
        }
        for line in order["rader"]
    ]
    resource["input"] = inputs
    b.own(resource)
