"""Collects one order's transaction Bundle entries (`Builder`): the order's own resources under their
deterministic ids, written whole; master data (Patient, Organization, Practitioner, PractitionerRole)
found by its identifier and merged (never erased), or created with a conditional create on that
identifier; and the units (Device) the order names."""

from __future__ import annotations

from gateway.adapters import mapping as m
from gateway.adapters import master_data
from gateway.adapters.bestallningsportalen.order_keys import SOURCE, Known, order_ids, patient_identifier
from gateway.adapters.ids import SourceIds
from gateway.model.types import Json


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
