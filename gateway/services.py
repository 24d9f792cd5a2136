"""The long-lived parts of a running gateway, built once from Settings and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from gateway.config import Settings
from gateway.hooks import Hooks
from gateway.limits.resources import ResourceLimits
from gateway.pipeline import WritePath
from gateway.search.cursor import Cursors
from gateway.search.engine import Searcher
from gateway.search.extract import Extractor
from gateway.search.parameters import SearchLimits
from gateway.search.query import Planner
from gateway.search.registry import Registry
from gateway.security.access_index import AccessIndex
from gateway.security.all_of import AllOf
from gateway.security.audit import AuditQueue
from gateway.security.organisation import OrganisationPolicy
from gateway.security.policy import ScopePolicy
from gateway.security.rules import Rules
from gateway.security.sealing import Sealer, key_secret
from gateway.store.database import make_engine
from gateway.subscriptions import topics as subscription_topics
from gateway.subscriptions.outbox import Outbox
from gateway.subscriptions.resource import SubscriptionOwners, SubscriptionRule
from gateway.subscriptions.topics import Topic
from gateway.workflow.installed import default_reactions, default_rules


@dataclass
class Services:
    settings: Settings
    engine: Engine
    registry: Registry
    searcher: Searcher
    extractor: Extractor
    write_path: WritePath
    hooks: Hooks
    audit: AuditQueue | None = None  # the AuditEvent writer, when the hooks audit to it
    topics: dict[str, Topic] = field(default_factory=dict)  # Subscription topics, by canonical URL

    @classmethod
    def build(cls, settings: Settings, hooks: Hooks | None = None, engine: Engine | None = None) -> Services:
        default_hooks = hooks is None
        sealer = Sealer.when_needed(settings)
        topics = subscription_topics.load(settings.profiles_dir)  # Subscription topics (Backport IG)
        engine = engine or make_engine(settings.database_url, settings.database_schema)
        zone = ZoneInfo(settings.local_timezone)
        registry = Registry.load(settings.profiles_dir)
        # The access rows and care relations are kept whatever the policy (auth on or off), so turning
        # the policy on needs no reindex.
        access = AccessIndex(Rules.load(settings.access_policy), registry, settings.base_url)
        if hooks is None:
            hooks = Hooks(
                rules=default_rules(),
                reactions=default_reactions(settings.profiles_dir, settings),
                notify=Outbox(),
            )
            hooks.rules.append(SubscriptionRule(settings, sealer, topics))
            if settings.auth:  # SMART scopes on every interaction; GATEWAY_AUTH=off keeps AllowAll
                # each client sees its own subscriptions only (gateway/subscriptions/resource.py)
                hooks.policy = AllOf(ScopePolicy(), SubscriptionOwners())
                if settings.organisation_policy:  # all must allow (docs/security.md)
                    organisation = OrganisationPolicy(
                        access.rules,
                        engine,
                        access,
                        settings.region_clients,
                        settings.protected_identity_clients,
                    )
                    hooks.policy = AllOf(ScopePolicy(), organisation, SubscriptionOwners())
        planner = Planner(zone, settings.base_url)
        cursors = Cursors(key_secret(settings))
        limits = SearchLimits(
            settings.max_search_parameters, settings.max_search_values, settings.max_conditional_criteria
        )
        searcher = Searcher(
            registry, planner, settings.default_page_size, settings.max_page_size, cursors, limits
        )
        extractor = Extractor(registry, zone, settings.base_url, access.rows)
        audit = None
        if default_hooks and settings.audit:
            audit = AuditQueue(
                engine,
                extractor,
                settings.audit_queue_size,
                settings.audit_batch_size,
                settings.audit_waits,
                settings.audit_wait_seconds,
            )
            hooks.audit = audit
        resources = ResourceLimits(settings.max_resource_bytes, settings.max_json_depth)
        write_path = WritePath(engine, searcher, extractor, hooks, access, resources)
        return cls(settings, engine, registry, searcher, extractor, write_path, hooks, audit, topics)

    def close(self) -> None:
        """Store every queued audit record and stop the writer (at shutdown)."""
        if self.audit is not None:
            self.audit.close()
