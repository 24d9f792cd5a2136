"""The purpose of use of an access (AuditEvent.purposeOfEvent): a code of the HL7 v3 PurposeOfUse value set
(codes of the v3-ActReason code system). It comes from the access token: the external issuer's claim
(GATEWAY_OIDC_CLAIM_PURPOSE), else the client's configured default (GATEWAY_CLIENT_PURPOSES), else TREAT,
care of the patient (Patientdatalagen 4 kap.). See docs/security.md."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.model.types import Json

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
DEFAULT = "TREAT"
# v3 PurposeOfUse (http://terminology.hl7.org/ValueSet/v3-PurposeOfUse), the codes a gateway client may
# state, with their displays.
CODES = {
    "TREAT": "treatment",
    "ETREAT": "Emergency Treatment",
    "CAREMGT": "care management",
    "CLINTRCH": "clinical trial research",
    "COVERAGE": "coverage under policy or program",
    "HOPERAT": "healthcare operations",
    "HPAYMT": "healthcare payment",
    "HRESCH": "healthcare research",
    "HQUALIMP": "health quality improvement",
    "HSYSADMIN": "health system administration",
    "HTEST": "test health data",
    "HLEGAL": "legal",
    "HMARKT": "healthcare marketing",
    "PATADMIN": "patient administration",
    "PATRQT": "patient requested",
    "FAMRQT": "family requested",
    "PWATRNY": "power of attorney",
    "SUPNWK": "support network",
    "PUBHLTH": "public health",
    "GOV": "government",
    "HDIRECT": "directory",
    "SYSDEV": "system development",
    "TRAIN": "training",
}


def checked(code: str) -> str:
    """`code` when it is a PurposeOfUse code; ValueError otherwise."""
    if code not in CODES:
        raise ValueError(f"'{code}' is not a v3 PurposeOfUse code ({', '.join(sorted(CODES))})")
    return code


def client_defaults(pairs: Iterable[str]) -> dict[str, str]:
    """GATEWAY_CLIENT_PURPOSES items (`client_id=CODE`) as a mapping; ValueError for a malformed one."""
    found: dict[str, str] = {}
    for pair in pairs:
        client_id, _, code = pair.partition("=")
        if not client_id.strip() or not code.strip():
            raise ValueError(f"GATEWAY_CLIENT_PURPOSES: '{pair}' is not client_id=CODE")
        found[client_id.strip()] = checked(code.strip())
    return found


def coding(code: str) -> Json:
    """The CodeableConcept of AuditEvent.purposeOfEvent."""
    return {"coding": [{"system": ACT_REASON, "code": code, "display": CODES.get(code, code)}]}
