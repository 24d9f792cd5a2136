"""Which sending facilities (MSH-4) the MLLP listener accepts, and the registered client each acts as.

GATEWAY_MLLP_FACILITIES lists `HSA-id=client id` pairs. A message from a listed facility is written with
that client's Principal (its organisation and scopes, read from the clients table for every message, so a
client deactivated or changed takes effect at once, and its purpose of use from GATEWAY_CLIENT_PURPOSES);
the client must be active and hold `gateway/adapter.hl7v2`, which implies the adapter's writes (added to
its scopes by `service`, as at the REST entrance), and must be bound to the facility as a source
(`gateway clients add --source hl7v2:<HSA-id>`): a facility whose client is not is refused with the same
`AR` as a facility not listed (`service` checks it for every message, and quarantines the message under
the client). Any other facility is refused (`AR`). With no list, every facility is accepted and the
adapter writes as its own client (`adapter:hl7v2`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.hooks import Principal
from gateway.security import purpose, sources, store
from gateway.security.scopes import ADAPTER_HL7V2, grants
from gateway.services import Services

log = logging.getLogger("gateway.adapters.hl7v2.mllp")
SETTING = "GATEWAY_MLLP_FACILITIES"


def not_accepted(facility: str) -> str:
    """The one text of an `AR` for a sending facility not accepted: not listed, or its client not bound to
    it (as a REST caller's message of a facility it is not bound to)."""
    return f"The sending facility {facility} is not accepted"


class NotAccepted(Exception):
    """The sending facility may not send to this listener; the text says why (it goes into the AR)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True)
class Senders:
    clients: Mapping[str, str] | None = None  # facility HSA-id → client id; None: every facility

    @classmethod
    def parse(cls, items: Iterable[str]) -> Senders:
        """`HSA-id=client id` items; anything else is a configuration error (raised at start-up)."""
        clients: dict[str, str] = {}
        for item in items:
            facility, separator, client = (part.strip() for part in item.partition("="))
            if not separator or not facility or not client:
                raise ValueError(f"{SETTING}: {item!r} is not of the form HSA-id=client-id")
            clients[facility] = client
        return cls(clients or None)

    def admit(self, svc: Services, facility: str) -> Principal | None:
        """The Principal of the client the facility's messages are written as (its own scopes and
        configured purpose of use; None: the adapter's own), or NotAccepted."""
        if self.clients is None:
            return None
        client_id = self.clients.get(facility)
        if client_id is None:
            raise NotAccepted(not_accepted(facility))
        client = store.get_client(svc.engine, client_id)
        if client is None or not client.active:
            log.error("MLLP: facility %s is mapped to client %r, not an active client", facility, client_id)
            raise NotAccepted(f"The sending facility {facility} has no active client")
        scopes = frozenset(client.scopes)
        if not grants(scopes).has(ADAPTER_HL7V2):
            raise NotAccepted(f"The client of sending facility {facility} lacks the scope {ADAPTER_HL7V2}")
        purpose_of_use = purpose.client_defaults(svc.settings.client_purposes).get(client_id, purpose.DEFAULT)
        return Principal(client.client_id, client.organization, scopes=scopes, purpose=purpose_of_use)

    def check(self, svc: Services) -> None:
        """Log at start-up what the configuration means, and every mapped client that cannot be used."""
        if self.clients is None:
            log.warning("MLLP: no %s configured: every sending facility is accepted", SETTING)
            return
        for facility in sorted(self.clients):
            try:
                principal = self.admit(svc, facility)
            except NotAccepted as refused:
                log.warning("MLLP: %s", refused.text)
                continue
            assert principal is not None
            if f"{sources.HL7V2}:{facility}" not in sources.of_client(svc.engine, principal.client_id):
                log.warning(
                    "MLLP: facility %s is mapped to client %s, which is not bound to the source hl7v2:%s "
                    "(gateway clients sources %s --add hl7v2:%s): its messages are refused",
                    *(facility, principal.client_id, facility, principal.client_id, facility),
                )
                continue
            log.info("MLLP: facility %s is accepted as client %s", facility, principal.client_id)
