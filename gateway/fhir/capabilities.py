"""capabilities: GET [base]/metadata, a CapabilityStatement generated from what is implemented."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import FHIR_VERSION, __version__
from gateway.fhir.context import request_context, services
from gateway.fhir.http import fhir_response
from gateway.model.types import SERVER_IDS, SUPPORTED_TYPES, loads
from gateway.search.dates import to_instant, utc_now
from gateway.security.endpoints import capability_security
from gateway.services import Services

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SEARCH_RESULT_PARAMS = ("_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements")


# With the organisation policy on, only trusted writers create by PUT (docs/security.md).
PUT_CREATE = (
    "Create by PUT (update as create, and a conditional update without a match) is open only to "
    "region-wide clients and the gateway's own writers (an adapter's mapped Bundle included); for any "
    "other client a PUT to an id that does not exist, is deleted or is hidden answers 404."
)


BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"


def subscription_entry(svc: Services) -> dict[str, Any]:
    """The Subscriptions R5 Backport IG's declarations: its Subscription profile, each topic's canonical,
    and the `$status` and `$events` operations (docs/fhir/subscriptions.md)."""
    return {
        "supportedProfile": [f"{BACKPORT}/StructureDefinition/backport-subscription"],
        "extension": [
            {
                "url": f"{BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
                "valueCanonical": url,
            }
            for url in sorted(svc.topics)
        ],
        "operation": [
            {"name": "status", "definition": f"{BACKPORT}/OperationDefinition/backport-subscription-status"},
            {"name": "events", "definition": f"{BACKPORT}/OperationDefinition/backport-subscription-events"},
        ],
    }


@lru_cache(maxsize=8)
def _operations(profiles_dir: Path | None) -> dict[str, list[dict[str, str]]]:
    """The gateway's own operations, by resource type: each OperationDefinition in profiles/."""
    found: dict[str, list[dict[str, str]]] = {}
    if profiles_dir is None or not profiles_dir.is_dir():
        return found
    for path in sorted(profiles_dir.glob("OperationDefinition-*.json")):
        definition = loads(path.read_bytes())
        for res_type in definition.get("resource") or []:
            entry = {"name": str(definition["code"]), "definition": str(definition["url"])}
            found.setdefault(str(res_type), []).append(entry)
    return found


PATIENT_OPERATIONS: dict[str, Any] = {
    "operation": [
        {
            "name": "everything",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
            "documentation": (
                "The R4 Patient compartment plus Device and Task (by patient), what they reference and "
                "their Provenance, as a search by the same client shows them; no AuditEvent or Binary "
                "(docs/fhir/everything.md)."
            ),
        }
    ]
}


BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
EXPORT_DOCUMENTATION = (
    "Bulk Data Access IG 2.0.0 (async: Prefer respond-async, 202 + Content-Location): _type, _since, "
    "_outputFormat, _typeFilter; what the client's searches show it, masked alike; Group level not served "
    "(docs/fhir/export.md)."
)
SYSTEM_OPERATIONS = [
    {
        "name": "export",
        "definition": f"{BULK_DATA}/OperationDefinition/export",
        "documentation": EXPORT_DOCUMENTATION,
    }
]
PATIENT_EXPORT = {
    "name": "export",
    "definition": f"{BULK_DATA}/OperationDefinition/patient-export",
    "documentation": EXPORT_DOCUMENTATION,
}


def capability_statement(svc: Services, base: str) -> dict[str, Any]:
    resources = []
    operations = _operations(svc.settings.profiles_dir)
    restricted = svc.settings.auth and svc.settings.organisation_policy
    for res_type in SUPPORTED_TYPES:
        params = svc.registry.for_type(res_type)
        resources.append(
            {
                "type": res_type,
                "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
                "versioning": "versioned",
                "readHistory": True,
                "updateCreate": not restricted and res_type not in SERVER_IDS,
                "conditionalCreate": True,
                "conditionalUpdate": True,
                "conditionalDelete": "not-supported",
                "searchInclude": sorted(
                    f"{res_type}:{p.code}" for p in params.values() if p.type == "reference"
                ),
                "searchRevInclude": sorted(
                    f"{other}:{p.code}"
                    for other in SUPPORTED_TYPES
                    for p in svc.registry.for_type(other).values()
                    if p.type == "reference" and (not p.targets or res_type in p.targets)
                ),
                "searchParam": [
                    {"name": p.code, "definition": p.url, "type": p.type}
                    | ({"documentation": p.description} if p.description else {})
                    for p in sorted(params.values(), key=lambda p: p.code)
                ],
            }
            | ({"documentation": PUT_CREATE} if restricted else {})
            | (subscription_entry(svc) if res_type == "Subscription" else {})
            | (
                {
                    "operation": [
                        *operations.get(res_type, []),
                        *PATIENT_OPERATIONS["operation"],
                        PATIENT_EXPORT,
                    ]
                }
                if res_type == "Patient"
                else {"operation": operations[res_type]}
                if res_type in operations
                else {}
            )
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": to_instant(utc_now()),
        "kind": "instance",
        "software": {"name": "fhir-home-device-gateway", "version": __version__},
        "implementation": {
            "description": "FHIR gateway for medical and assistive devices at home",
            "url": base,
        },
        "instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"],
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "operation": SYSTEM_OPERATIONS,
                "searchParam": [{"name": name, "type": "special"} for name in SEARCH_RESULT_PARAMS],
            }
        ],
    }


async def metadata(request: Request) -> Response:
    svc = services(request)
    base = request_context(request).base_url
    return fhir_response(capability_security(capability_statement(svc, base), svc.settings, base))
