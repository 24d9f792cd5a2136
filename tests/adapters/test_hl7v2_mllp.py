"""The MLLP listener over real sockets: concurrent connections, framing errors, and fuzzing."""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.adapters import quarantine
from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.hl7v2.message import Hl7Error
from gateway.adapters.hl7v2.mllp import Listener, ListenerSettings, frame
from gateway.adapters.hl7v2.senders import Senders
from gateway.config import Settings
from gateway.hooks import AccessRecord, RequestContext
from gateway.security import store
from gateway.security.scopes import ADAPTER_HL7V2
from gateway.services import Services
from gateway.store.tables import Resource
from tests.adapters.test_hl7v2_messages import KOMMUN, adt
from tests.conftest import Database

PNRS = ["191212121212", "195001182046", "196408233234", "197802022389", "198112189876", "199001012385"]


HOSPITAL_HSA = "SE2321000016-KS01"
HOSPITAL_CLIENT = "karolinska-journal"


class Running:
    """A Listener on its own event loop in a thread, on a free port."""

    def __init__(self, services: Services, settings: ListenerSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.listener = Listener(services, settings)
        asyncio.run_coroutine_threadsafe(self.listener.start(), self.loop).result(10)
        self.port = self.listener.port

    def stop(self) -> None:
        # asyncio servers are closed on their own loop's thread
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def register(
    services: Services, client_id: str, organization: str, scopes: list[str], bound: bool = True
) -> None:
    """A registered client, bound (unless not `bound`) to its organisation as a sending facility."""
    sources = [f"hl7v2:{organization}"] if bound else []
    store.add_client(services.engine, client_id, organization, {"keys": []}, scopes, client_id, sources)


def hospital_senders(services: Services) -> Senders:
    """Only the hospital is accepted, as its registered journal system's client."""
    register(services, HOSPITAL_CLIENT, HOSPITAL_HSA, [ADAPTER_HL7V2, "system/*.cruds"])
    return Senders({HOSPITAL_HSA: HOSPITAL_CLIENT})


@pytest.fixture
def mllp(services: Services) -> Iterator[Running]:
    settings = ListenerSettings(port=0, senders=hospital_senders(services), max_message_bytes=65536)
    running = Running(services, settings)
    yield running
    running.stop()


def exchange(port: int, payloads: list[bytes], raw: bool = False) -> list[bytes]:
    """Send each payload (framed unless raw) on one connection; read one ACK per payload."""
    answers: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        buffer = b""
        for payload in payloads:
            sock.sendall(payload if raw else frame(payload))
            while b"\x1c\r" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return answers
                buffer += chunk
            ack, _, buffer = buffer.partition(b"\x1c\r")
            assert ack.startswith(b"\x0b")
            answers.append(ack[1:])
    return answers


def count(services: Services) -> int:
    """Stored resources, audit records left out."""
    query = select(func.count()).select_from(Resource).where(Resource.res_type != "AuditEvent")
    with services.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def test_one_ack_per_message_and_unknown_facilities_get_ar(mllp: Running) -> None:
    answers = exchange(
        mllp.port, [adt("A01", "M1"), adt("A01", "M1"), adt("A01", "M2", facility="X^SE999^L")]
    )
    assert [read_ack(a)[:2] for a in answers] == [("AA", "M1"), ("AA", "M1"), ("AR", "M2")]


def test_concurrent_connections(mllp: Running, services: Services) -> None:
    def one(i: int) -> list[str]:
        pnr = PNRS[i % len(PNRS)]
        messages = [
            adt("A01", f"C{i}-1", pnr=pnr, visit=f"V{i}"),
            adt("A03", f"C{i}-2", pnr=pnr, visit=f"V{i}", sent="20261127120000", discharged="20261127110000"),
        ]
        return [read_ack(a)[0] for a in exchange(mllp.port, messages)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(12)))
    assert all(r == ["AA", "AA"] for r in results), results
    with services.engine.connect() as connection:
        patients = connection.execute(
            select(func.count()).select_from(Resource).where(Resource.res_type == "Patient")
        ).scalar_one()
        encounters = connection.execute(
            select(func.count()).select_from(Resource).where(Resource.res_type == "Encounter")
        ).scalar_one()
    assert (patients, encounters) == (len(PNRS), 12)


def test_framing_errors_never_stop_the_listener(mllp: Running) -> None:
    junk = b"garbage before\r\n" + frame(adt("A01", "F1"))
    assert read_ack(exchange(mllp.port, [junk], raw=True)[0])[:2] == ("AA", "F1")
    with socket.create_connection(("127.0.0.1", mllp.port), timeout=5) as sock:
        sock.sendall(b"\x0b" + b"x" * 70000)  # larger than the limit, never ends
        assert b"MSA|AR" in sock.recv(65536)
    with socket.create_connection(("127.0.0.1", mllp.port), timeout=5) as sock:
        sock.sendall(b"\x0bMSH|half a message")  # then the client goes away
    assert read_ack(exchange(mllp.port, [frame(b"not hl7 at all")], raw=True)[0])[0] == "AR"
    assert read_ack(exchange(mllp.port, [adt("A01", "F2", pnr="195001182046", visit="V9")])[0])[0] == "AA"


def test_parsing_in_other_processes_answers_exactly_as_parsing_in_process(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [
        adt("A01", "P1"),
        adt("A03", "P2", sent="20261127120000", discharged="20261127110000"),
        adt("A01", "P3", pnr="191212121213"),  # AE: the Luhn digit is wrong
        adt("A01", "P4", charset="EBCDIC"),  # AR from parse
        b"MSH|^~\\&|ping",
        adt("A01", "P1"),  # a duplicate
    ]
    answers: dict[int, list[tuple[str, str, str]]] = {}
    before: dict[int, int] = {}
    for processes in (1, 0):
        before[processes] = count(services)
        running = Running(services, ListenerSettings(port=0, parse_processes=processes))
        assert (running.listener.parse_pool is not None) == (processes > 0)
        try:
            answers[processes] = [read_ack(a) for a in exchange(running.port, messages)]
        finally:
            running.stop()
    assert [a[0] for a in answers[1]] == ["AA", "AA", "AE", "AR", "AR", "AA"]
    assert answers[1] == answers[0]
    assert "parse pool" not in caplog.text  # the pool parsed them all, none fell back
    assert count(services) > before[1] and count(services) == before[0]  # the second run: all known


def test_an_hl7_error_crosses_processes_whole() -> None:
    error = Hl7Error("AE", "PV1-19 (visit number) is missing", "PV1-19", "101")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.text, copy.location, copy.hl7_error) == ("AE", error.text, "PV1-19", "101")


MESSAGE = adt("A01", "Z1", zsv=f"ZSV|Y|0180^Stockholms stad^{KOMMUN}|SE2321000016-VC01||||N")


def mutate(data: Any) -> bytes:
    message = bytearray(MESSAGE)
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(message) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            message[position] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del message[position : position + data.draw(st.integers(1, 20))]
        else:
            message[position:position] = data.draw(
                st.sampled_from([b"|", b"^", b"\r", b"\x0b", b"\x1c", b"&"])
            )
    return bytes(message)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_random_and_mutated_messages(mllp: Running, services: Services, data: Any) -> None:
    payload = data.draw(st.one_of(st.binary(max_size=300), st.builds(mutate, st.data())))
    before = count(services)
    with socket.create_connection(("127.0.0.1", mllp.port), timeout=20) as sock:
        sock.sendall(frame(payload))
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if answer:  # an ACK or a clean close, never anything else
        assert answer.startswith(b"\x0bMSH|") and answer.endswith(b"\x1c\r")
        code = read_ack(answer[1:-2])[0]
        assert code in ("AA", "AE", "AR")
        if code != "AA":
            assert count(services) == before  # a refused message writes nothing
    assert read_ack(exchange(mllp.port, [frame(b"MSH|^~\\&|ping")], raw=True)[0])[0] == "AR"


# -- identity: the sending facility's client ------------------------------------------------------------


@pytest.fixture
def audited(database: Database) -> Iterator[Services]:
    """Services that write AuditEvents, with SMART scopes and the organisation policy enforced; the
    hospital's journal system is region-wide (its messages write for the municipality and primary care)."""
    database.clear()
    settings = database.settings(
        auth=True, audit=True, organisation_policy=True, region_clients=(HOSPITAL_CLIENT,)
    )
    built = Services.build(settings, engine=database.engine)
    yield built
    built.close()


def audit_events(services: Services, query: str) -> list[dict[str, Any]]:
    assert services.audit is not None
    services.audit.flush()
    with services.engine.connect() as connection:
        return [s.json() for s in services.searcher.match(connection, "AuditEvent", query, 1000)]


def listening(services: Services, senders: Senders) -> Running:
    return Running(services, ListenerSettings(port=0, senders=senders))


def test_messages_are_written_and_audited_as_the_facilitys_client(audited: Services) -> None:
    running = listening(audited, hospital_senders(audited))
    try:
        [answer] = exchange(running.port, [adt("A01", "I1")])
    finally:
        running.stop()
    assert read_ack(answer) == ("AA", "I1", "")
    [record] = audit_events(audited, "subtype=import")
    client, organization = record["agent"][:2]
    assert client["who"]["identifier"]["value"] == HOSPITAL_CLIENT
    assert client["network"]["address"] == "127.0.0.1"
    assert organization["who"]["identifier"]["value"] == HOSPITAL_HSA
    assert "I1" in record["outcomeDesc"] and record["outcome"] == "0"
    writes = audit_events(audited, "subtype=create")
    assert writes, "the writes of the message are audited too"
    assert {e["agent"][0]["who"]["identifier"]["value"] for e in writes} == {HOSPITAL_CLIENT}


def test_the_entrance_scope_implies_the_adapters_writes(audited: Services) -> None:
    """As at the REST entrances: the facility's client holds only `gateway/adapter.hl7v2`, and writes
    with the adapter's scopes added to its own (docs/security.md, "Who an adapter writes as")."""
    register(audited, HOSPITAL_CLIENT, HOSPITAL_HSA, [ADAPTER_HL7V2])
    running = listening(audited, Senders({HOSPITAL_HSA: HOSPITAL_CLIENT}))
    try:
        [answer] = exchange(running.port, [adt("A01", "I2")])
    finally:
        running.stop()
    assert read_ack(answer) == ("AA", "I2", "")
    assert count(audited) > 0
    writes = audit_events(audited, "subtype=create")
    assert {e["agent"][0]["who"]["identifier"]["value"] for e in writes} == {HOSPITAL_CLIENT}


def test_a_bound_facilitys_messages_are_the_gateways_writes_audited_as_its_client(
    database: Database,
) -> None:
    """Not region-wide, the facility's client bound to its facility writes the municipality's and
    primary care's Tasks and Organizations too: the message's writes run in the context of its source
    (the gateway's own writes), audited as the client. Not bound, the same message is AR and nothing is
    written (test_a_facility_whose_client_is_not_bound_to_it_is_refused_as_an_unlisted_one)."""
    database.clear()
    settings = database.settings(auth=True, audit=True, organisation_policy=True)
    services = Services.build(settings, engine=database.engine)
    try:
        register(services, HOSPITAL_CLIENT, HOSPITAL_HSA, [ADAPTER_HL7V2])
        running = listening(services, Senders({HOSPITAL_HSA: HOSPITAL_CLIENT}))
        try:
            [answer] = exchange(running.port, [adt("A01", "I3")])
        finally:
            running.stop()
        assert read_ack(answer) == ("AA", "I3", "")
        assert count(services) > 0
        [record] = audit_events(services, "subtype=import")
        assert record["agent"][0]["who"]["identifier"]["value"] == HOSPITAL_CLIENT
        assert record["outcome"] == "0"
        writes = audit_events(services, "subtype=create")
        assert writes and {e["agent"][0]["who"]["identifier"]["value"] for e in writes} == {HOSPITAL_CLIENT}
    finally:
        services.close()


def test_a_message_is_audited_under_its_clients_configured_purpose(database: Database) -> None:
    database.clear()
    settings = database.settings(
        auth=True,
        audit=True,
        region_clients=(HOSPITAL_CLIENT,),
        client_purposes=(f"{HOSPITAL_CLIENT}=CAREMGT",),
        mllp_facilities=(f"{HOSPITAL_HSA}={HOSPITAL_CLIENT}",),
    )
    services = Services.build(settings, engine=database.engine)
    try:
        register(services, HOSPITAL_CLIENT, HOSPITAL_HSA, [ADAPTER_HL7V2])
        running = Running(services, replace(ListenerSettings.from_settings(settings), port=0))
        try:
            [answer] = exchange(running.port, [adt("A01", "I4")])
        finally:
            running.stop()
        assert read_ack(answer)[0] == "AA"
        found = audit_events(services, "subtype=import") + audit_events(services, "subtype=create")
        assert len(found) > 1
        assert {e["purposeOfEvent"][0]["coding"][0]["code"] for e in found} == {"CAREMGT"}
    finally:
        services.close()


def test_a_client_without_the_adapter_scope_or_unregistered_gets_ar(services: Services) -> None:
    register(services, "no-scope", HOSPITAL_HSA, ["system/*.cruds"])
    senders = Senders({HOSPITAL_HSA: "no-scope", "SE2321000016-SS01": "never-registered"})
    running = listening(services, senders)
    try:
        answers = exchange(
            running.port,
            [adt("A01", "J1"), adt("A01", "J2", facility="Södersjukhuset^SE2321000016-SS01^L")],
        )
    finally:
        running.stop()
    first, second = (read_ack(a) for a in answers)
    assert first[:2] == ("AR", "J1") and ADAPTER_HL7V2 in first[2]
    assert second[:2] == ("AR", "J2") and "no active client" in second[2]
    assert count(services) == 0


def test_a_facility_whose_client_is_not_bound_to_it_is_refused_as_an_unlisted_one(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """The facility is mapped to an active client holding the scope but not bound to `hl7v2:<facility>`:
    the same AR as for a facility not listed (the sender learns nothing of the mapping), a warning at
    start-up, and the message quarantined under that client (replayable once it is bound)."""
    register(services, HOSPITAL_CLIENT, HOSPITAL_HSA, [ADAPTER_HL7V2], bound=False)
    with caplog.at_level(logging.WARNING, logger="gateway.adapters.hl7v2.mllp"):
        running = listening(services, Senders({HOSPITAL_HSA: HOSPITAL_CLIENT}))
    try:
        unbound, unlisted = exchange(
            running.port, [adt("A01", "U1"), adt("A01", "U1", facility="Karolinska^SE2321000016-XX99^L")]
        )
    finally:
        running.stop()
    assert f"not bound to the source hl7v2:{HOSPITAL_HSA}" in caplog.text
    assert read_ack(unbound) == ("AR", "U1", f"The sending facility {HOSPITAL_HSA} is not accepted")
    assert read_ack(unlisted) == ("AR", "U1", "The sending facility SE2321000016-XX99 is not accepted")
    assert count(services) == 0
    [item] = quarantine.listing(services.engine, "hl7v2")
    assert (item.client_id, item.source_key) == (HOSPITAL_CLIENT, f"{HOSPITAL_HSA} U1")


def test_without_a_list_every_facility_is_accepted_with_a_warning(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.adapters.hl7v2.mllp"):
        running = listening(services, Senders())
    try:
        answers = exchange(running.port, [adt("A01", "K1", facility="Annat^SE2321000016-XX01^L")])
    finally:
        running.stop()
    assert read_ack(answers[0])[:2] == ("AA", "K1")
    assert "every sending facility is accepted" in caplog.text


def test_a_facility_list_must_name_clients() -> None:
    assert Senders.parse([" SE1 = c1 ", "SE2=c2"]).clients == {"SE1": "c1", "SE2": "c2"}
    assert Senders.parse([]).clients is None
    with pytest.raises(ValueError, match="HSA-id=client-id"):
        Senders.parse(["SE2321000016-KS01"])


def test_the_parse_processes_are_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEWAY_MLLP_PARSE_PROCESSES reaches the listener `gateway serve` starts (`start_embedded`)."""
    assert ListenerSettings.from_settings(Settings.from_env()).parse_processes == 0
    monkeypatch.setenv("GATEWAY_MLLP_PARSE_PROCESSES", "2")
    assert ListenerSettings.from_settings(Settings.from_env()).parse_processes == 2
    monkeypatch.setenv("GATEWAY_MLLP_PARSE_PROCESSES", "-1")
    with pytest.raises(ValueError, match="GATEWAY_MLLP_PARSE_PROCESSES"):
        ListenerSettings.from_settings(Settings.from_env())


def test_a_message_waits_while_the_audit_queue_is_full_and_its_records_are_all_stored(
    database: Database,
) -> None:
    """The listener holds a message (its sender waits for the ACK) while the audit queue is full, rather
    than write it and lose its `import` record."""
    database.clear()
    services = Services.build(database.settings(audit=True, audit_queue_size=8), engine=database.engine)
    sink = services.audit
    assert sink is not None
    running = Running(services, ListenerSettings(port=0, max_message_bytes=65536))
    answers: list[bytes] = []
    try:
        with sink.paused():
            while not sink.full():  # the held writer may have taken one record already
                sink.record(AccessRecord("import", None, [], 200, RequestContext(), "fills the queue"))
                time.sleep(0.05)
            sender = threading.Thread(
                target=lambda: answers.extend(exchange(running.port, [adt("A01", "Q1")]))
            )
            sender.start()
            sender.join(timeout=0.5)
            assert sender.is_alive() and not answers, "held while the queue is full"
        sender.join(timeout=20)
        assert b"MSA|AA|Q1" in answers[0]
        sink.flush()
        with database.engine.connect() as connection:
            contents = connection.execute(select(Resource.content).where(Resource.res_type == "AuditEvent"))
            details = [content for (content,) in contents]
        assert any("MLLP ADT^A01 Q1" in content for content in details), "its import record stored"
    finally:
        running.stop()
        services.close()
