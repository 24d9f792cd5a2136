"""The write path's store → index step: a version stored with its index rows, identifier claims and
care relations, in the unit of work's transaction (`WritePath` in gateway/pipeline.py calls it).

Also the tombstone a delete stores, the index rows and care relations `gateway reindex` computes anew,
the named exception for a patient identity held by a Patient the client may not read
(docs/security.md): `duplicate`, no id, audited; and the turns concurrent conditional writes with the
same criteria take (`serialize`), so that they store one resource.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import datetime, timedelta
from time import perf_counter
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from gateway.errors import duplicate_identity
from gateway.hooks import AccessRecord, Change, Hooks
from gateway.limits.resources import ResourceLimits
from gateway.model.types import Json
from gateway.search.dates import to_instant
from gateway.search.extract import Extractor, IndexRows
from gateway.security.access_index import KEPT_ON_DELETE, AccessIndex
from gateway.store import relations
from gateway.store.relations import Writer
from gateway.store.repository import Repository, Stored
from gateway.store.visibility import Visibility, visible_keys
from gateway.telemetry.metrics import INDEX, STORE
from gateway.unit_of_work import Conflict, IdentifierTaken, UnitOfWork, identifiers_of


def serialize(uow: UnitOfWork, res_type: str, query: str, visibility: Visibility) -> None:
    """Concurrent conditional writes with the same normalized criteria, evaluated as the same
    client, take turns for the length of their transactions, so they make one resource (PostgreSQL:
    an advisory lock on a hash of them; SQLite's writers take turns already). Criteria that overlap
    but differ are not serialized (docs/fhir/create.md)."""
    if uow.connection.dialect.name != "postgresql":
        return
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    who = (
        "*"
        if visibility.everything
        else uow.context.principal.organization or uow.context.principal.client_id
    )
    normalized = f"{res_type}?{urlencode(pairs)}#{who}".encode()
    key = int.from_bytes(hashlib.blake2b(normalized, digest_size=8).digest(), "big", signed=True)
    uow.connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


class Storing:
    """store → index for `WritePath`: the same limits, extractor, hooks and access index it holds."""

    def __init__(
        self,
        limits: ResourceLimits,
        extractor: Extractor,
        hooks: Hooks,
        access: AccessIndex,
        lasts: timedelta,
    ) -> None:
        self.limits = limits
        self.extractor = extractor
        self.hooks = hooks
        self.access = access
        self.lasts = lasts

    def store(
        self,
        uow: UnitOfWork,
        previous: Stored | None,
        resource: Json,
        method: str,
        existing: Json | None = None,
        indexed: IndexRows | None = None,
    ) -> Stored:
        """store → index, in the unit of work's transaction. `existing`: the previous version's content,
        when the caller has it (identifiers it already holds need no new claim); `indexed`: the index
        rows of this content but its references, extracted before the unit of work (`Extractor.rows`
        with `references=False`)."""
        self.limits.check(resource)
        resource = copy.copy(resource)
        version = previous.version_id + 1 if previous else 1
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = to_instant(uow.now)
        resource["meta"] = meta
        repository = uow.repository
        res_type = resource["resourceType"]
        writer = self.hooks.policy.writer(uow.context)
        if writer.trusted and uow.context.on_behalf_of is not None and previous and previous.writer:
            # a reaction's change of what a client wrote stays that client's write: its identifier claims,
            # and its care relations keep their bases (the gateway never makes a client's facts trusted)
            found = relations.find_actors(uow.connection, previous.writer, self.access.rules.hsa_system)
            writer = Writer(False, found)
        identifiers = [
            (self.claim_system(writer, res_type, system), value) for system, value in identifiers_of(resource)
        ]
        kept = existing is not None and set(identifiers) == {
            (self.claim_system(writer, res_type, system), value) for system, value in identifiers_of(existing)
        }
        for system, value in [] if kept else identifiers:
            holder = repository.claimed_by(res_type, system, value)
            if holder is not None and (previous is None or holder != previous.rid):
                self.identifier_taken(uow, writer, res_type, system, value, holder)
        try:
            started = perf_counter()
            stored = repository.write(previous, resource, method, uow.now, writer=writer.hsa)
            indexing = perf_counter()
            STORE.observe(indexing - started)
            fresh = previous is None
            rows = (
                self.extractor.rows(resource)
                if indexed is None
                else self.extractor.completed(indexed, resource)
            )
            repository.replace_index(stored.rid, rows, fresh)
            if not kept:
                repository.replace_claims(stored.rid, res_type, identifiers, fresh)
            self.relate(uow, stored, resource, writer, fresh)
            INDEX.observe(perf_counter() - indexing)
        except IntegrityError as error:
            raise Conflict(str(error.orig)) from error
        uow.read_ahead.pop((stored.res_type, stored.res_id), None)
        uow.changes.append(Change(stored.res_type, stored.res_id, stored.version_id, method))
        return stored

    def claim_system(self, writer: Writer, res_type: str, system: str) -> str:
        """The system an identifier is claimed under: as written for the gateway's own writers, region-wide
        clients and patient identities (one Patient per personnummer, across organisations); for anything
        else a client writes, within its organisation, so that no identifier held by what it may not read
        stops its write (and tells it the identifier exists)."""
        if writer.trusted or (res_type == "Patient" and system in self.access.rules.identity_systems):
            return system
        return f"{writer.hsa}|{system}"[:255]

    def identifier_taken(
        self, uow: UnitOfWork, writer: Writer, res_type: str, system: str, value: str, holder: int
    ) -> None:
        """An identifier held by another resource: 409. A patient identity held by a Patient the client
        may not read is the named exception (docs/security.md): `duplicate`, no id, audited."""
        held = uow.repository.current_many([holder])
        if not writer.trusted and res_type == "Patient" and held:
            visibility = self.hooks.policy.visibility(uow.context, writing=True)
            if not visible_keys(uow.connection, visibility, [("Patient", held[0].res_id)]):
                self.hidden_identity(uow, "create", held[0].res_id)
        raise IdentifierTaken(
            f"Another {res_type} already has the identifier {system}|{value}", f"{res_type}.identifier"
        )

    def hidden_identity(self, uow: UnitOfWork, interaction: str, patient_id: str) -> None:
        record = AccessRecord(
            interaction, "Patient", [], 409, uow.context, "identity of a Patient not shared"
        )
        record.patients = [f"Patient/{patient_id}"]
        uow.records.append(record)
        raise duplicate_identity("Patient.identifier")

    def relate(self, uow: UnitOfWork, stored: Stored, resource: Json, writer: Writer, fresh: bool) -> None:
        """The care relations the version makes (docs/security.md), kept with it."""
        if self.access.rules.relationship(stored.res_type) is not None:
            facts = self.access.facts(resource)
            relations.replace(uow.connection, stored.rid, facts, writer, uow.now, self.lasts, fresh)
        if fresh and stored.res_type == "Patient" and not writer.trusted and writer.hsa:
            relations.add_created(uow.connection, stored.rid, writer.hsa, stored.res_id)

    def tombstone(self, uow: UnitOfWork, current: Stored) -> Stored:
        """Store the tombstone that deletes `current`: the access rows of its last version kept
        (`KEPT_ON_DELETE`), its other index rows, identifier claims and care relations gone."""
        res_type, res_id = current.res_type, current.res_id
        tombstone = {"resourceType": res_type, "id": res_id}
        meta = {"versionId": str(current.version_id + 1), "lastUpdated": to_instant(uow.now)}
        tombstone["meta"] = meta  # type: ignore[assignment]
        writer = self.hooks.policy.writer(uow.context)
        try:
            started = perf_counter()
            stored = uow.repository.write(
                current, tombstone, "DELETE", uow.now, deleted=True, writer=writer.hsa
            )
            STORE.observe(perf_counter() - started)
            kept = [row for row in self.access.rows(current.json()) if row["param"] in KEPT_ON_DELETE]
            uow.repository.replace_index(stored.rid, IndexRows(reference=kept))
            uow.repository.replace_claims(stored.rid, res_type, [])
            relations.remove(uow.connection, stored.rid)
        except IntegrityError as error:
            raise Conflict(str(error.orig)) from error
        uow.read_ahead.pop((res_type, res_id), None)
        uow.changes.append(Change(res_type, res_id, stored.version_id, "DELETE"))
        return stored

    def reindex(self, connection: Connection, stored: Stored, now: datetime) -> None:
        """A current resource's index rows and care relations computed anew from its content and who wrote
        it (`gateway reindex`; after the upgrade that brought care relations, their first computation).
        A Patient a client wrote is taken to be one it registered."""
        resource = stored.json()
        Repository(connection).replace_index(stored.rid, self.extractor.rows(resource))
        hsa = stored.writer
        writer = relations.TRUSTED
        if hsa is not None:
            writer = Writer(False, relations.find_actors(connection, hsa, self.access.rules.hsa_system))
        if self.access.rules.relationship(stored.res_type) is not None:
            facts = self.access.facts(resource)
            relations.replace(connection, stored.rid, facts, writer, now, self.lasts, fresh=False)
        if stored.res_type == "Patient" and hsa and not relations.created_by(connection, stored.rid):
            relations.add_created(connection, stored.rid, hsa, stored.res_id)
