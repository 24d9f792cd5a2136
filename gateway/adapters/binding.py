"""Which sources' records the writer at an adapter entrance may send, and the context a record's writes
run in.

A registered client (REST caller, `gateway import … --client`, a facility's client over MLLP) may send
only records of the sources it is bound to (`gateway clients add --source KIND:ID`,
gateway/security/sources.py). A record of any other source is refused with one answer whatever that
source is (bound to another client, or to none; with records stored, or none), and quarantined under the
client. The gateway itself (auth off, an adapter's own client: the CLI without `--client`, replay) sends
every source's records. Either way a record's writes run in a context whose `source` is the record's
(`RequestContext.source`: the write path takes them as the gateway's own, the principal staying the
caller for audit)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import Engine

from gateway.errors import Issue
from gateway.hooks import RequestContext, internal_client
from gateway.security import sources


@dataclass(frozen=True)
class Bound:
    """The sources the writer is bound to; None: the gateway itself, which sends every source's."""

    sources: frozenset[str] | None = None

    @classmethod
    def of(cls, engine: Engine, context: RequestContext) -> Bound:
        """The binding of the client `context` writes as (read from the database each time)."""
        client_id = context.principal.client_id
        if internal_client(client_id):
            return cls(None)
        return cls(sources.of_client(engine, client_id))

    @property
    def gateway(self) -> bool:
        """The gateway itself writes: no binding is checked, and no owner (quarantine `client_id`)."""
        return self.sources is None

    def admits(self, source: str) -> bool:
        return self.sources is None or source in self.sources


def refusal(source: str, expression: tuple[str, ...]) -> Issue:
    """The one answer to a record of a source the client is not bound to: it names only the source the
    record itself gives, so it tells nothing of who else sends that source or what is stored of it."""
    message = f"This client may not send records of the source {source}"
    return Issue("error", "forbidden", message, expression)


def owner(context: RequestContext) -> str | None:
    """The client a rejected record is quarantined under: the sending client; None for the gateway's own
    client (auth off, the CLI without `--client`, replay)."""
    client_id = context.principal.client_id
    return None if internal_client(client_id) else client_id


def in_source(context: RequestContext, source: str) -> RequestContext:
    """The context the writes of a record of `source` run in: the caller's, with `source` set (and a memo
    of its own: what a policy memoised for the caller alone is not reused)."""
    return replace(context, source=source, cache={}, connection=None)
