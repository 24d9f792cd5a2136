"""How the gateway marks what it proposed about a patient's risk, for the views that show it (the device
list) as well as for gateway/risk/assess.py that writes it: the `proposed` tag and the author of its
rule notes."""

from __future__ import annotations

BASE = "https://fhir.home-device-gateway.se"
TAGS = f"{BASE}/CodeSystem/gateway-tags"
PROPOSED = {"system": TAGS, "code": "proposed", "display": "Föreslagen av gatewayen"}
GATEWAY_AUTHOR = "Gatewayen"


def is_proposed(resource: dict[str, object]) -> bool:
    """Whether the resource carries the gateway's `proposed` tag (a suggestion no clinician confirmed)."""
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return any(
        isinstance(tag, dict) and (tag.get("system"), tag.get("code")) == (TAGS, PROPOSED["code"])
        for tag in tags or []
    )
