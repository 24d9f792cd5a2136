"""Policies that must all allow (`Services.build`: the SMART scopes and the organisation policy)."""

from __future__ import annotations

from gateway.hooks import Permissive, RequestContext
from gateway.model.types import Json
from gateway.search.parameters import Masking
from gateway.store.relations import TRUSTED, Writer
from gateway.store.visibility import EVERYTHING, Both, Visibility


class AllOf(Permissive):
    """Policies that must all allow: the SMART scopes and the organisation policy. What each lets a reader
    see is ANDed in the query; masks apply in turn."""

    def __init__(self, *policies: Permissive) -> None:
        self.policies = policies

    def visibility(self, context: RequestContext, writing: bool = False) -> Visibility:
        found: Visibility = EVERYTHING
        for policy in self.policies:
            found = Both(found, policy.visibility(context, writing))
        return found

    def writer(self, context: RequestContext) -> Writer:
        writers = [policy.writer(context) for policy in self.policies]
        return next((w for w in writers if not w.trusted), TRUSTED)

    def may_create_by_put(self, context: RequestContext) -> bool:
        return all(policy.may_create_by_put(context) for policy in self.policies)

    def authorize_write(
        self, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        for policy in self.policies:
            policy.authorize_write(context, action, resource, current)

    def authorize_search(self, context: RequestContext, res_type: str) -> None:
        for policy in self.policies:
            policy.authorize_search(context, res_type)

    def authorize_patch(self, context: RequestContext, current: Json, operations: object) -> None:
        for policy in self.policies:
            policy.authorize_patch(context, current, operations)

    def identity_query(self, res_type: str, query: str) -> bool:
        return any(policy.identity_query(res_type, query) for policy in self.policies)

    def mask(self, context: RequestContext, resource: Json) -> Json:
        for policy in self.policies:
            resource = policy.mask(context, resource)
        return resource

    @property
    def masks(self) -> bool:
        return any(policy.masks for policy in self.policies)

    def masking(self, context: RequestContext) -> Masking | None:
        """What any policy masks (the union hides at least what each one hides)."""
        params: frozenset[str] = frozenset()
        labels: frozenset[tuple[str, str]] = frozenset()
        for policy in self.policies:
            found = policy.masking(context)
            if found is not None:
                params, labels = params | found.params, labels | found.labels
        return Masking(params, labels) if params and labels else None

    def keep_hidden(self, context: RequestContext, resource: Json, current: Json | None) -> Json:
        for policy in self.policies:
            resource = policy.keep_hidden(context, resource, current)
        return resource

    def acts_for(self, context: RequestContext, node: object) -> bool:
        return all(policy.acts_for(context, node) for policy in self.policies)
