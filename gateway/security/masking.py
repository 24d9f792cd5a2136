"""Protected identities (sekretessmarkering, skyddad folkbokföring): what a client not allowed to see them
is served of such a Patient, what it may write of one, and which search parameters look into what is
hidden (docs/security.md, "Protected identities")."""

from __future__ import annotations

import copy
from typing import Any

from gateway.errors import forbidden
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.search.parameters import Masking
from gateway.security.rules import Rules, coding

REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}


class ProtectedIdentities:
    def __init__(self, rules: Rules, unmasked_clients: frozenset[str]) -> None:
        self.rules = rules
        self.unmasked_clients = rules.unmasked_clients | unmasked_clients

    def unmasked(self, context: RequestContext) -> bool:
        principal = context.principal
        return (
            principal.client_id in self.unmasked_clients
            or principal.organization in self.rules.unmasked_organizations
        )

    def protected(self, resource: Any) -> bool:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            return False
        meta = resource.get("meta")
        labels = meta.get("security") if isinstance(meta, dict) else None
        return any(coding(label) in self.rules.protected_labels for label in labels or [])

    def masking(self, context: RequestContext) -> Masking | None:
        """The search parameters whose values the mask hides, and the labels that make a Patient
        masked: a search by them leaves protected Patients out (also through a chain), and a sort by
        them orders protected Patients as if they had no value. None when the client sees them."""
        if self.unmasked(context):
            return None
        return Masking(self.rules.masked_parameters, self.rules.protected_labels)

    def mask(self, context: RequestContext, resource: Json) -> Json:
        """A labelled Patient without name, address, telecom (and the other masked elements), unless the
        client or its organisation is allowed; so too a labelled Patient contained in any resource."""
        if self.unmasked(context):
            return resource
        contained = resource.get("contained")
        if isinstance(contained, list) and any(self.protected(c) for c in contained):
            resource = {**resource, "contained": [self.mask(context, c) for c in contained]}
        if not self.protected(resource):
            return resource
        masked = {k: v for k, v in resource.items() if k not in self.rules.masked_elements}
        meta = copy.deepcopy(masked.get("meta") or {})
        meta["security"] = [*meta.get("security", []), REDACTED]
        masked["meta"] = meta
        return masked

    def hidden_from(self, context: RequestContext, current: Json, internal: bool) -> bool:
        """Whether `current` is a protected Patient that `context` is served masked and writes as such
        (`internal`: one of the gateway's own writers, which build from what is stored)."""
        return self.protected(current) and not internal and not self.unmasked(context)

    def keep_hidden(self, resource: Json, current: Json) -> Json:
        """The update a masked writer makes of a protected Patient keeps the stored masked elements and
        protection labels: they are not the client's to change, and a PUT of what it read must not wipe
        them. The REDACTED label the mask added is dropped."""
        masked = self.rules.masked_elements
        kept = {k: v for k, v in resource.items() if k not in masked}
        kept.update({k: v for k, v in current.items() if k in masked})
        meta = {k: v for k, v in (kept.get("meta") or {}).items() if k != "security"}
        labels = self._kept_labels(kept.get("meta") or {}, current.get("meta") or {})
        kept["meta"] = {**meta, "security": labels} if labels else meta
        return kept

    def _kept_labels(self, meta: Json, held: Json) -> list[Any]:
        """The client's security labels without REDACTED, and every stored protection label."""
        labels = [label for label in meta.get("security") or [] if coding(label) != coding(REDACTED)]
        stored = [label for label in held.get("security") or [] if label not in labels]
        return labels + [label for label in stored if coding(label) in self.rules.protected_labels]

    def authorize_patch(self, operations: Any) -> None:
        """A JSON Patch of a protected Patient by a masked writer that touches a masked element (any
        operation: test, replace, remove, add, move, copy; `path` or `from`) is refused before it is
        applied, whatever the values: a `test` would otherwise confirm a guess."""
        if not isinstance(operations, list):
            return
        masked = frozenset(self.rules.masked_elements)
        for operation in operations:
            pointers = [operation.get(key) for key in ("path", "from")] if isinstance(operation, dict) else []
            if any(isinstance(pointer, str) and _touches(pointer, masked) for pointer in pointers):
                raise forbidden(
                    "This Patient's protected elements are hidden from this client; a patch may not touch "
                    f"{', '.join(self.rules.masked_elements)} (nor the whole resource)"
                )


def _touches(pointer: str, elements: frozenset[str]) -> bool:
    """Whether a JSON Pointer reaches into one of the top-level `elements`, or is the whole document."""
    if not pointer:
        return True
    parts = pointer.split("/")
    top = parts[1] if len(parts) > 1 else parts[0]  # not a pointer ("name"): judged as if it were one
    return top.replace("~1", "/").replace("~0", "~") in elements
