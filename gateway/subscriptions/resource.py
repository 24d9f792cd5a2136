"""The `Subscription` resource: owned by the client that writes it, checked and completed on every write.

A client sees and changes only its own subscriptions (`OwnSubscriptions`: the owner is a `meta.tag` the
gateway sets, which the client cannot choose); another client's answer as an unknown id. On a write the
rule checks the channel (rest-hook, an endpoint the client's registration allows, headers `Authorization`
or `X-…` of at most 4 KiB each, sealed before they are stored) and the criteria (a search on a supported
type, or a topic the gateway defines), sets the status the gateway manages (`requested` until activated,
`off` when the client says so or its `end` has passed) and keeps the subscription's delivery state in the
same transaction (docs/fhir/subscriptions.md).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, Connection, Table, and_, exists, insert, or_, select, true, update

from gateway.config import Settings
from gateway.errors import unprocessable
from gateway.hooks import Permissive, RequestContext, internal_client
from gateway.model.types import SUPPORTED, Json
from gateway.search.dates import utc_now
from gateway.security.sealing import KeySecretError, Sealer, is_sealed
from gateway.store.tables import SubscriptionState
from gateway.store.visibility import EVERYTHING, TOKEN, Visibility
from gateway.subscriptions import endpoints
from gateway.subscriptions.topics import Topic
from gateway.unit_of_work import UnitOfWork

SUBSCRIPTION = "Subscription"
OWNER_SYSTEM = "https://fhir.home-device-gateway.se/CodeSystem/subscription-client"
STATE = cast(Table, SubscriptionState.__table__)
MAX_HEADER_BYTES = 4096
NOT_SUBSCRIBABLE = frozenset({SUBSCRIPTION, "AuditEvent", "Binary"})
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
MAX_COUNT = BACKPORT + "backport-max-count"
TIMEOUT = BACKPORT + "backport-timeout"
PAYLOAD_CONTENTS = frozenset({"empty", "id-only", "full-resource"})


def channel_extension(resource: Json, url: str) -> Any:
    for extension in (resource.get("channel") or {}).get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == url:
            for key, value in extension.items():
                if key.startswith("value"):
                    return value
    return None


def payload_content(resource: Json) -> str:
    """A topic-based subscription's payload content (`empty` when not given, as the Backport IG says)."""
    payload = (resource.get("channel") or {}).get("_payload") or {}
    for extension in payload.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == PAYLOAD_CONTENT:
            return str(extension.get("valueCode"))
    return "empty"


def timeout_of(resource: Json, ceiling: float) -> float:
    """How long a delivery attempt waits for the endpoint, seconds: the subscription's
    `backport-timeout` (the Backport IG: the most the server waits before failing the attempt), at most
    GATEWAY_NOTIFY_TIMEOUT, which applies when it is not given."""
    asked = channel_extension(resource, TIMEOUT)
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return min(float(asked), ceiling)
    return ceiling


def owner_of(resource: Json | None) -> str | None:
    for tag in (resource or {}).get("meta", {}).get("tag") or []:
        if isinstance(tag, dict) and tag.get("system") == OWNER_SYSTEM:
            return str(tag.get("code"))
    return None


def with_owner(resource: Json, client_id: str) -> Json:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == OWNER_SYSTEM)]
    meta["tag"] = [*tags, {"system": OWNER_SYSTEM, "code": client_id}]
    return {**resource, "meta": meta}


def gateway_context(context: RequestContext) -> bool:
    """The gateway's own (its deliverer, the CLI, a reaction, an adapter): sees every subscription."""
    return context.on_behalf_of is not None or internal_client(context.principal.client_id)


@dataclass(frozen=True)
class OwnSubscriptions:
    """Subscriptions of one client only; every other type as the other policies decide."""

    client_id: str

    @property
    def everything(self) -> bool:
        return False

    def owned(self, row: Any) -> ColumnElement[bool]:
        token = TOKEN.alias()
        return exists().where(
            token.c.rid == row.c.rid,
            token.c.param == "_tag",
            token.c.system == OWNER_SYSTEM,
            token.c.code == self.client_id,
        )

    def where(self, row: Any, res_type: str | None = None) -> ColumnElement[bool]:
        if res_type is not None:
            return self.owned(row) if res_type == SUBSCRIPTION else true()
        return or_(row.c.res_type != SUBSCRIPTION, and_(row.c.res_type == SUBSCRIPTION, self.owned(row)))


class SubscriptionOwners(Permissive):
    """The policy part that keeps each client to its own subscriptions (composed with the others)."""

    def visibility(self, context: RequestContext, writing: bool = False) -> Visibility:
        if gateway_context(context):
            return EVERYTHING
        return OwnSubscriptions(context.principal.client_id)


class SubscriptionRule:
    """The business rule on a Subscription write (gateway/hooks.py, `Rule`)."""

    def __init__(self, settings: Settings, sealer: Callable[[], Sealer], topics: Mapping[str, Topic]) -> None:
        self.settings = settings
        self.sealer = sealer
        self.topics = topics

    def __call__(self, uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
        if resource.get("resourceType") != SUBSCRIPTION:
            return resource
        context = uow.context
        if action == "delete":
            uow.connection.execute(
                update(STATE)
                .where(STATE.c.sub_id == str(resource["id"]))
                .values(status="off", reason="deleted")
            )
            return resource
        if gateway_context(context):  # the deliverer's status changes, an operator's: as it was owned
            owner = owner_of(current) or context.principal.client_id
            return with_owner(resource, owner) if current is not None else self._checked(uow, resource, None)
        return self._checked(uow, resource, current)

    def _checked(self, uow: UnitOfWork, resource: Json, current: Json | None) -> Json:
        context = uow.context
        principal = context.requestor
        sub_id = str(resource["id"])
        resource = copy.deepcopy(resource)
        channel = resource.get("channel") or {}
        if channel.get("type") != "rest-hook":
            raise unprocessable("Only channel.type rest-hook is supported", "Subscription.channel.type")
        reg = (
            endpoints.Registration(any_endpoint=True)
            if not self.settings.auth
            else endpoints.registration(uow.connection, principal.client_id)
        )
        try:
            target = endpoints.check(
                str(channel.get("endpoint") or ""), reg, self.settings.allow_http_loopback
            )
        except endpoints.EndpointRefused as error:
            raise unprocessable(str(error), "Subscription.channel.endpoint") from error
        channel["endpoint"] = target.url
        channel["header"] = self._headers(sub_id, channel.get("header") or [])
        if not channel["header"]:
            channel.pop("header")
        resource["channel"] = channel
        timeout = channel_extension(resource, TIMEOUT)
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1):
            raise unprocessable(
                "backport-timeout is a whole number of seconds, at least 1", "Subscription.channel"
            )
        topic = self._criteria(resource)
        status = self._status(resource, current)
        resource["status"] = status
        resource = with_owner(resource, principal.client_id)
        self._keep_state(uow.connection, sub_id, principal.client_id, context, status, topic, resource)
        return resource

    def _headers(self, sub_id: str, headers: list[Any]) -> list[str]:
        sealed = []
        for index, header in enumerate(headers):
            where = f"Subscription.channel.header[{index}]"
            name, sep, value = str(header).partition(":")
            name, value = name.strip(), value.strip()
            if not sep or not name or not (name.lower() == "authorization" or name.lower().startswith("x-")):
                raise unprocessable("A channel header must be 'Authorization: …' or 'X-…: …'", where)
            if len(str(header).encode()) > MAX_HEADER_BYTES:
                raise unprocessable(f"A channel header may be at most {MAX_HEADER_BYTES} bytes", where)
            if is_sealed(value):  # as read back: must be this subscription's own
                try:
                    self.sealer().unseal(f"{SUBSCRIPTION}/{sub_id}", value)
                except (KeySecretError, ValueError) as error:
                    raise unprocessable(
                        "A sealed channel header is not this subscription's", where
                    ) from error
            else:
                value = self.sealer().seal(f"{SUBSCRIPTION}/{sub_id}", {"value": value})
            sealed.append(f"{name}: {value}")
        return sealed

    def _criteria(self, resource: Json) -> str | None:
        """The topic canonical of a topic-based subscription, None for R4 classic criteria (checked)."""
        criteria = str(resource.get("criteria") or "")
        if criteria.startswith(("http://", "https://")):
            topic = self.topics.get(criteria)
            if topic is None:
                raise unprocessable(f"Unknown subscription topic {criteria}", "Subscription.criteria")
            topic.check_filters(resource)
            content = payload_content(resource)
            if content not in PAYLOAD_CONTENTS:
                raise unprocessable(
                    "backport-payload-content is empty, id-only or full-resource",
                    "Subscription.channel.payload",
                )
            return criteria
        res_type, _, query = criteria.partition("?")
        if res_type not in SUPPORTED or res_type in NOT_SUBSCRIBABLE:
            raise unprocessable(
                "Subscription.criteria must be a search on a supported resource type, or a topic canonical",
                "Subscription.criteria",
            )
        for name, _value in parse_qsl(query, keep_blank_values=True):
            if name.startswith("_") and name not in ("_id", "_tag", "_profile", "_security", "_lastUpdated"):
                raise unprocessable(f"Subscription.criteria may not use {name}", "Subscription.criteria")
        return None

    def _status(self, resource: Json, current: Json | None) -> str:
        end = resource.get("end")
        if isinstance(end, str) and passed(end):
            return "off"
        asked = resource.get("status")
        if asked == "off":
            return "off"
        if (
            current is not None
            and current.get("status") == "active"
            and asked == "active"
            and (
                current.get("channel") == resource.get("channel")
                and current.get("criteria") == resource.get("criteria")
            )
        ):
            return "active"
        return "requested"

    def _keep_state(
        self,
        connection: Connection,
        sub_id: str,
        client_id: str,
        context: RequestContext,
        status: str,
        topic: str | None,
        resource: Json,
    ) -> None:
        principal = context.requestor
        values = {
            "client_id": client_id,
            "organization": principal.organization,
            "scopes": " ".join(sorted(principal.scopes)),
            "status": status,
            "reason": None,
            "topic": topic,
            "heartbeat_seconds": _heartbeat(resource) if topic else None,
            "attempts": 0,
            "retry_at": None,
            "failing_since": None,
        }
        found = connection.execute(select(STATE.c.sub_id).where(STATE.c.sub_id == sub_id)).first()
        if found is None:
            connection.execute(
                insert(STATE).values(sub_id=sub_id, last_number=0, acked=0, created_at=utc_now(), **values)
            )
        else:
            connection.execute(update(STATE).where(STATE.c.sub_id == sub_id).values(**values))


def passed(instant: str) -> bool:
    try:
        when = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when <= utc_now()


def _heartbeat(resource: Json) -> int | None:
    period = channel_extension(resource, HEARTBEAT_PERIOD)
    return int(period) if isinstance(period, int) and period > 0 else None
