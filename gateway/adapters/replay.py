"""`gateway import --replay ID`: the operator replays a quarantined input (any client's) through the
adapter that rejected it, as the adapter's own client (the gateway itself: no source binding applies)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from gateway.adapters import quarantine
from gateway.adapters.cli import ImportAudit
from gateway.adapters.registry import ADAPTERS
from gateway.config import Settings
from gateway.model.types import Json
from gateway.services import Services

console = Console(stderr=True, soft_wrap=True)


def replay_item(item_id: int) -> int:
    """Process quarantined item `item_id` again; 0 when every part of it is accepted now. The replay is
    audited (one `import` record), and every audit record is stored before it returns."""
    svc = Services.build(Settings.from_env().for_batch())
    try:
        return _replay(svc, item_id)
    finally:
        svc.close()
        svc.engine.dispose()


def _replay(svc: Services, item_id: int) -> int:
    item = quarantine.get(svc.engine, item_id)
    if item is None:
        console.print(f"[red]no quarantined input with id {item_id}")
        return 2
    adapter = ADAPTERS.get(item.adapter)
    if adapter is None:
        console.print(f"[red]no adapter named {item.adapter} to replay input {item_id}")
        return 2
    context = adapter.client.context(svc)  # the operator replays as the adapter: the gateway itself
    audit = ImportAudit(svc, context, "--replay")
    response: Json | None = None
    try:
        with audit.collecting():
            response = adapter.replay(svc, context, item.payload, item.content_type)
    finally:  # audited whatever the outcome, as broken off (500) should the replay raise
        answer = _answer(response["entry"]) if response is not None else None
        audit.record(f"{item_id} ({item.adapter})", answer, touched=True)
    statuses = [entry.get("response", {}).get("status", "") for entry in response.get("entry", [])]
    accepted = all(status.startswith(("200", "201")) for status in statuses)
    if accepted:
        quarantine.set_status(svc.engine, item_id, "replayed")
    console.print(f"replayed {item_id}: {', '.join(statuses) or 'nothing to do'}")
    for diagnostics in _diagnostics(response):
        console.print(f"  {escape(diagnostics)}")
    return 0 if accepted else 1


def _answer(entries: list[Json]) -> Json:
    """The replayed input's answer as one entry, for its audit record: the first entry not accepted,
    else the first (a 200 when there is none: nothing to do)."""
    refused = [
        e for e in entries if not str(e.get("response", {}).get("status", "")).startswith(("200", "201"))
    ]
    return (refused or entries or [{"response": {"status": "200 OK"}}])[0]


def _diagnostics(response: Json) -> list[str]:
    """What the entries' OperationOutcomes say (e.g. the HL7 ACK of a replayed message)."""
    return [
        str(issue["diagnostics"])
        for entry in response.get("entry", [])
        for issue in entry.get("response", {}).get("outcome", {}).get("issue", [])
        if issue.get("diagnostics")
    ]
