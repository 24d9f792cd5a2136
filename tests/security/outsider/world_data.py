"""The adversarial world as data: the lung clinic (the region), Kommun A and Kommun B, their directory, their
patients and a resource of every supported type for them, every resource given a value for (almost)
every search parameter by the filler. Built once per process from a fixed seed (`world_resources`).

Flavours: `public` the directory (readable by everyone); `b` what the outsider, Kommun B's client, may
read (its patients, resources naming it); `h` what only the clinic and Kommun A may read; `hb` the
clinic's resources about one of B's patients that do not name B (hidden too); `gone` hidden resources
deleted after seeding. The references the filler adds never change who may read what: a hidden resource
names nothing of B's; B's resources reach hidden ones only through elements that grant nothing (not the
patient or link elements of policy/access.yaml), and only the first hidden resource of each type
(`exposed`), so B knows that one's id (never its content) and the others' ids stay secret."""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gateway.adapters.mapping import luhn_digit
from gateway.config import Settings
from gateway.model.types import SUPPORTED_TYPES, Json
from gateway.search.registry import Registry, SearchParam
from tests.api.helpers import HSA, PNR
from tests.security.outsider.filler import fill
from tests.security.outsider.values import TEST_SYSTEM, FlavourValues, supported_first

LABELS = "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel"
HSA_CLINIC, HSA_A, HSA_B = "SE2321000016-LUNG", "SE2120000181-KA", "SE2120000182-KB"
HIDDEN_FLAVOURS = frozenset({"h", "hb", "gone"})
# Types the world does not write through the API: the gateway writes AuditEvents itself.
# AuditEvents come from the audit trail; Subscriptions are owned per client, not per organisation, and
# are covered by tests/subscriptions (a client sees only its own).
NOT_SEEDED = frozenset({"AuditEvent", "Subscription"})
B_COUNT, H_COUNT, H_PAGING = 3, 6, 26  # B's rows per type; hidden rows per type; hidden Observations
SEED = 14
GATEWAY = "https://fhir.home-device-gateway.se"


def policy() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(Path(Settings().access_policy).read_text(encoding="utf-8"))
    return data


PUBLIC_TYPES = frozenset(policy()["public_types"])


@dataclass
class Seeded:
    resource: Json
    flavour: str

    @property
    def ref(self) -> str:
        return f"{self.resource['resourceType']}/{self.resource['id']}"


def pnr(serial: int) -> str:
    """A fictitious personnummer (born 1930-12-1x) with a correct Luhn digit, one per serial."""
    digits = f"3012{10 + serial // 1000:02d}{serial % 1000:03d}"
    return f"19{digits}{luhn_digit(digits)}"


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


class Builder:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.rng = random.Random(SEED)
        rules = policy()
        self.link_elements = frozenset(rules["link_elements"])
        self.patient_elements = frozenset(rules["patient_elements"])
        self.seeded: list[Seeded] = []
        self.by: dict[tuple[str, str], list[str]] = {}  # (flavour, type) → ids
        self.values = {
            flavour: FlavourValues(random.Random(f"{SEED}-{flavour}"), half, self._picker(flavour))
            for flavour, half in (("public", 0), ("b", 0), ("h", 1), ("hb", 1), ("gone", 1))
        }
        self.serial = 0

    # -- ids and references ----------------------------------------------------------------------

    def new_id(self, res_type: str, flavour: str) -> str:
        letters = "abcdefghijkmnopqrstuvwxyz23456789"
        tail = "".join(self.rng.choice(letters) for _ in range(8))
        return f"{res_type[:3].lower()}{flavour[0]}-{tail}"

    def add(self, resource: Json, flavour: str, res_id: str | None = None) -> str:
        res_type = resource["resourceType"]
        resource["id"] = res_id or self.new_id(res_type, flavour)
        self.seeded.append(Seeded(resource, flavour))
        self.by.setdefault((flavour, res_type), []).append(resource["id"])
        return str(resource["id"])

    def ids(self, flavour: str, res_type: str) -> list[str]:
        return self.by.get((flavour, res_type), [])

    def _picker(self, flavour: str) -> Any:
        b_public = {"org-kb", "role-b", "prac-b", "loc-b", "hs-b"}

        def pick(param: SearchParam, path: str, targets: list[str]) -> str | None:
            top = path.split(".")[1] if "." in path else ""
            granting = top in self.link_elements or top in self.patient_elements
            rng = self.values[flavour].rng
            for target in supported_first(targets):
                if target in PUBLIC_TYPES:  # B's own directory entries for B, the others' for the rest
                    found = [
                        i for i in self.ids("public", target) if (i in b_public) == (flavour == "b")
                    ] or self.ids("public", target)
                elif flavour == "public":
                    found = []
                elif flavour == "b":
                    found = self.ids("b", target) if granting else self.ids("h", target)[:1]
                else:
                    found = self.ids("h", target)
                if found:
                    return f"{target}/{rng.choice(found)}"
            for target in targets:
                if target not in SUPPORTED_TYPES:
                    return f"{target}/{self.new_id(target, flavour)}"
            return None

        return pick

    # -- bases -------------------------------------------------------------------------------------

    def directory(self) -> None:
        for key, hsa, name in (
            ("clinic", HSA_CLINIC, "Lungmottagningen"),
            ("ka", HSA_A, "Kommun A"),
            ("kb", HSA_B, "Kommun B"),
        ):
            self.add(
                {"resourceType": "Organization", "identifier": [{"system": HSA, "value": hsa}], "name": name},
                "public",
                f"org-{key}",
            )
        for key, org in (("clinic", "org-clinic"), ("a", "org-ka"), ("b", "org-kb")):
            self.add({"resourceType": "Practitioner"}, "public", f"prac-{key}")
            role = {
                "resourceType": "PractitionerRole",
                "organization": ref(f"Organization/{org}"),
                "practitioner": ref(f"Practitioner/prac-{key}"),
            }
            self.add(role, "public", f"role-{key}")
            self.add(
                {"resourceType": "Location", "managingOrganization": ref(f"Organization/{org}")},
                "public",
                f"loc-{key}",
            )
            self.add(
                {"resourceType": "HealthcareService", "providedBy": ref(f"Organization/{org}")},
                "public",
                f"hs-{key}",
            )

    def patient(self, flavour: str, protected: bool = False) -> str:
        self.serial += 1
        resource: Json = {
            "resourceType": "Patient",
            "identifier": [{"system": PNR, "value": pnr(self.serial * 37 + (0 if flavour == "b" else 5000))}],
            "managingOrganization": ref("Organization/org-kb" if flavour == "b" else "Organization/org-ka"),
        }
        if protected:
            resource["meta"] = {"security": [{"system": LABELS, "code": "sekretessmarkering"}]}
        return self.add(resource, flavour)

    def base(self, res_type: str, flavour: str, patient: str, index: int) -> Json:
        """What a resource needs to be valid and to be readable by whom its flavour says."""
        v = self.values[flavour]
        b = flavour == "b"
        org = (
            "Organization/org-kb"
            if b
            else ("Organization/org-clinic" if flavour == "hb" else "Organization/org-ka")
        )
        role = "PractitionerRole/role-b" if b else "PractitionerRole/role-clinic"
        subject = ref(f"Patient/{patient}")
        # small code domains the outsider's rows and the hidden rows do not share
        intent = "order" if b else "plan"

        def status(path: str) -> str:
            return v.bound(res_type, path) or "unknown"

        match res_type:
            case "Task":
                return {
                    "status": "requested" if b else "received",
                    "intent": intent,
                    "for": subject,
                    "owner": ref(org),
                    "requester": ref(role),
                }
            case "DeviceRequest":
                code: Json = {"codeCodeableConcept": {"text": v.word()}}
                devices = self.ids(flavour if flavour != "hb" else "h", "Device")
                if index % 2 and devices:
                    code = {"codeReference": ref(f"Device/{devices[index % len(devices)]}")}
                return {
                    "status": status("DeviceRequest.status"),
                    "intent": intent,
                    **code,
                    "subject": subject,
                    "requester": ref(role),
                    "performer": ref(org),
                }
            case "Device":
                return {"owner": ref(org), "patient": subject}
            case "DeviceUseStatement":
                device = self.ids(flavour if flavour != "hb" else "h", "Device")
                return {
                    "status": status("DeviceUseStatement.status"),
                    "subject": subject,
                    "device": ref(f"Device/{device[index % len(device)]}"),
                    "source": ref(role),
                }
            case "CareTeam":
                return {
                    "subject": subject,
                    "participant": [{"member": ref(role)}],
                    "managingOrganization": [ref(org)],
                }
            case "CarePlan":
                teams = self.ids(flavour if flavour != "hb" else "h", "CareTeam")
                return {
                    "status": status("CarePlan.status"),
                    "intent": "plan" if b else "proposal",
                    "subject": subject,
                    "careTeam": [ref(f"CareTeam/{teams[index % len(teams)]}")],
                    "author": ref(role),
                }
            case "Encounter":
                return {
                    "status": status("Encounter.status"),
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "HH" if b else "AMB",
                    },
                    "subject": subject,
                    "serviceProvider": ref(org),
                }
            case "Observation":
                observation: Json = {
                    "status": status("Observation.status"),
                    "code": {"text": v.word()},
                    "subject": subject,
                    "performer": [ref(role)],
                }
                if index % 4 == 1:  # value[x] a dateTime in some: the other parameters fill the rest
                    observation["valueDateTime"] = v.instant()
                return observation
            case "ServiceRequest":
                return {
                    "status": status("ServiceRequest.status"),
                    "intent": intent,
                    "subject": subject,
                    "requester": ref(role),
                }
            case "Communication":
                recipient = "Organization/org-kb" if b else "PractitionerRole/role-a"
                return {
                    "status": status("Communication.status"),
                    "subject": subject,
                    "sender": ref(role),
                    "recipient": [ref(recipient)],
                }
            case "Flag":
                return {
                    "status": status("Flag.status"),
                    "code": {"text": v.word()},
                    "subject": subject,
                    "author": ref(org),
                }
            case "AdverseEvent":
                return {
                    "actuality": "potential" if b else "actual",
                    "subject": subject,
                    "recorder": ref(role),
                }
            case "Condition":
                # onset[x] and abatement[x] as a date in some rows and a string in others: every choice
                # parameter (onset-date, onset-info, abatement-date, abatement-string) has hidden values
                condition: Json = {"subject": subject, "recorder": ref(role)}
                if index % 2:
                    condition.update(onsetString=v.word(), abatementDateTime=v.instant())
                else:
                    condition.update(onsetDateTime=v.instant(), abatementString=v.word())
                return condition
            case "RiskAssessment":
                return {"status": status("RiskAssessment.status"), "subject": subject, "performer": ref(role)}
            case "Consent":
                return {
                    "status": status("Consent.status"),
                    "scope": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                "code": "patient-privacy" if b else "treatment",
                            }
                        ]
                    },
                    "category": [{"coding": [{"system": TEST_SYSTEM, "code": v.code()}], "text": v.word()}],
                    "patient": subject,
                    "performer": [ref(org)],
                    "organization": [ref(org)],
                }
            case "List":
                return {
                    "status": status("List.status"),
                    "mode": "working",
                    "subject": subject,
                    "source": ref(role),
                    "title": v.word(),
                }
            case "Provenance":
                signature = {
                    "type": [
                        {
                            "system": "urn:iso-astm:E1762-95:2013",
                            "code": "1.2.840.10065.1.12.1." + ("1" if b else "5"),  # author, verifier
                        }
                    ],
                    "when": v.instant(),
                    "who": ref(role),
                }
                return {
                    "target": [subject],
                    "recorded": v.instant(),
                    "agent": [{"who": ref(role)}],
                    "signature": [signature],
                }
            case "Binary":
                secret = f"{v.word(4)} {v.word(4)}".encode()
                return {
                    "contentType": "text/plain",
                    "data": base64.b64encode(secret).decode(),
                    "securityContext": ref(org),
                }
        raise ValueError(f"no base for {res_type}")

    def build(self) -> list[Seeded]:
        self.directory()
        b_patients = [self.patient("b") for _ in range(3)] + [self.patient("b", protected=True)]
        h_patients = [self.patient("h") for _ in range(4)] + [self.patient("h", protected=True)]
        gone_patient = self.patient("gone")
        # the types whose resources others reference first (DeviceUseStatement needs a Device, a CarePlan
        # its CareTeam), then the rest in the order the server lists them
        order = ["Device", "CareTeam"] + [t for t in SUPPORTED_TYPES if t not in ("Device", "CareTeam")]
        for res_type in order:
            if res_type in PUBLIC_TYPES or res_type in NOT_SEEDED or res_type == "Patient":
                continue
            count = len(b_patients) if res_type == "Task" else B_COUNT
            for i in range(count):
                self.add(self.typed(res_type, "b", b_patients[i % len(b_patients)], i), "b")
            for i in range(H_PAGING if res_type == "Observation" else H_COUNT):
                self.add(self.typed(res_type, "h", h_patients[i % len(h_patients)], i), "h")
            self.add(self.typed(res_type, "gone", gone_patient, 0), "gone")
            if res_type in ("Observation", "Encounter", "ServiceRequest", "Communication", "Task"):
                self.add(self.typed(res_type, "hb", b_patients[0], 0), "hb")
        self.fill_all()
        self.high_risk(b_patients[0])
        return self.seeded

    def high_risk(self, patient: str) -> None:
        """The clinic's facts about one of B's patients that make the gateway propose a high-risk flag
        (lives alone, a handover with no help active): hidden from B, while the gateway's RiskAssessment
        and Flag are visible to it (named exception 6), their `basis` naming these only for those who
        may read them."""
        snomed = "http://snomed.info/sct"
        situation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": snomed, "code": "224130005"}]},
            "valueCodeableConcept": {"coding": [{"system": snomed, "code": "105529008"}]},
            "subject": ref(f"Patient/{patient}"),
            "effectiveDateTime": (date.today() - timedelta(days=20)).isoformat(),
            "performer": [ref("Organization/org-clinic")],
        }
        self.add(situation, "hb", "obsh-ensamhemma")
        handover = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {
                "coding": [{"system": f"{GATEWAY}/CodeSystem/care-transition-task", "code": "handover"}]
            },
            "for": ref(f"Patient/{patient}"),
            "requester": ref("Organization/org-clinic"),
        }
        self.add(handover, "hb", "tash-overlamning")

    def typed(self, res_type: str, flavour: str, patient: str, index: int) -> Json:
        return {"resourceType": res_type, **self.base(res_type, flavour, patient, index)}

    def fill_all(self) -> None:
        """Every parameter's value in every resource, where the resource can take it; the order of the
        parameters turns with each resource, so resources of one type take different variants of a
        choice element (an Observation's value a concept in one, a date or a string in others)."""
        turn: dict[tuple[str, str], int] = {}
        for item in self.seeded:
            res_type = item.resource["resourceType"]
            params = [p for p in self.registry.for_type(res_type).values() if p.indexed]
            params.sort(key=lambda p: p.code)
            key = (item.flavour, res_type)
            shift = turn[key] = turn.get(key, -1) + 1
            shift %= max(len(params), 1)
            for param in params[shift:] + params[:shift]:
                fill(item.resource, param, self.values[item.flavour])


@cache
def world_resources() -> tuple[Seeded, ...]:
    """The world's resources, built once per process (deterministic: the same on every database)."""
    registry = Registry.load(Settings().profiles_dir)
    return tuple(Builder(registry).build())
