"""What a response shows of a stored resource. Every interaction that answers with a resource body (read,
vread, history, search and its includes, the body of a create, update or patch, conditional matches,
transaction and batch entries) builds it through a `View`, so the policy's mask (protected identities
without name, address, telecom; docs/security.md) applies on every path alike, and so does the response
budget (gateway.limits.budget): each resource shown is charged its stored size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.hooks import AccessPolicy, RequestContext
from gateway.limits import budget
from gateway.model.types import Json
from gateway.store.repository import Stored


@dataclass(frozen=True)
class View:
    """Resources as `context` may see them under `policy`."""

    policy: AccessPolicy
    context: RequestContext

    def resource(self, resource: Json) -> Json:
        """The resource masked as the policy says (the resource itself when nothing is hidden)."""
        return self.policy.mask(self.context, resource) if self.policy.masks else resource

    def body(self, stored: Stored) -> str | Json:
        """A response body: the stored text unparsed when the policy masks nothing, else masked JSON."""
        budget.charge(len(stored.content))
        return self.resource(stored.json()) if self.policy.masks else stored.content

    def entry(self, base: str, stored: Stored, mode: str | None = None) -> dict[str, Any]:
        """A Bundle entry for a stored resource, its resource masked (left out for a tombstone)."""
        budget.charge(len(stored.content))
        item: dict[str, Any] = {"fullUrl": f"{base}/{stored.res_type}/{stored.res_id}"}
        if not stored.deleted:
            item["resource"] = self.resource(stored.json())
        if mode is not None:
            item["search"] = {"mode": mode}
        return item
