"""`gateway schedule run [--now ISO-TIME]`: one pass of every job (for cron, operators and tests), and
`gateway worklist --org HSA-ID [--overdue]`: a unit's open (or overdue) scheduled Tasks, all of them page
by page, each page audited as the search it is (naming the patients it printed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated
from urllib.parse import parse_qsl, quote, urlencode

import typer
from rich.console import Console
from rich.markup import escape

from gateway.config import Settings
from gateway.hooks import Principal, RequestContext
from gateway.pipeline import UnitOfWork
from gateway.schedule import clock
from gateway.schedule.common import OPEN_QUERY
from gateway.schedule.registry import JOBS, run_pass
from gateway.schedule.writer import BUSINESS_STATUS, HSA, TASK_CODES
from gateway.search.engine import Page
from gateway.services import Services

schedule_app = typer.Typer(help="The scheduled jobs (docs/scheduling.md).", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
# The Task codes of a unit's worklist: what the jobs make (and the fault reports, issue 18).
WORKLIST_CODES = ("follow-up", "control-cleaning", "service-due", "retirement-review", "fault-report")
CLI = Principal(client_id="cli", scopes=frozenset({"system/*.cruds"}))


@schedule_app.command("run")
def run(
    now: Annotated[
        str | None, typer.Option(help="The jobs' clock, an ISO date-time (default GATEWAY_NOW, else now).")
    ] = None,
) -> None:
    """Run one pass of every job; print what each did."""
    settings = Settings.from_env().for_batch()
    try:
        if now is None:  # GATEWAY_NOW as at start-up; an operator's explicit --now is its own
            clock.check_fake_clock(settings)
    except clock.FakeClockRefused as refused:
        console.print(f"[red]{escape(str(refused))}[/red]")
        raise typer.Exit(2) from refused
    try:
        moment = clock.now(settings, now)
    except ValueError as error:
        console.print(f"[red]--now is not an ISO date-time: {escape(str(now))}[/red]")
        raise typer.Exit(2) from error
    svc = Services.build(settings)
    try:
        results = run_pass(svc, moment)
    finally:
        svc.close()
        svc.engine.dispose()
    for job in JOBS:
        tally = results.get(job.name)
        if tally is None:
            out.print(f"{job.name}: skipped (another process holds its lease)")
        else:
            out.print(
                f"{job.name}: {tally.created} created, {tally.updated} overdue, {tally.reports} reports, "
                f"{tally.cancelled} cancelled ({tally.seen} plans looked at)"
                + (f"; failed: {tally.errors[0]}" if tally.errors else "")
            )
    if any(tally is not None and tally.errors for tally in results.values()):
        raise typer.Exit(1)


def _search(svc: Services, context: RequestContext, res_type: str, query: str) -> Page:
    from gateway.fhir.search import visible_page

    def work(uow: UnitOfWork) -> Page:
        search = svc.searcher.parse(res_type, parse_qsl(query, keep_blank_values=True), "")
        return visible_page(svc, uow, res_type, search)

    context.query = f"{res_type}?{query}"
    return svc.write_path.run(context, work, write=False)


def _pages(svc: Services, res_type: str, query: str) -> Iterator[Page]:
    """Every page of a search, each its own unit of work and audited search (the query and its cursor, as a
    client paging through it would be): `_count` matches at a time, never the whole result in memory."""
    cursor: str | None = None
    while True:
        paged = query if cursor is None else f"{query}&{urlencode([('_cursor', cursor)])}"
        page = _search(svc, RequestContext(principal=CLI), res_type, paged)
        yield page
        cursor = page.next_cursor
        if cursor is None or not page.matches:
            return


def _owners(svc: Services, organisation: str, count: int) -> list[str]:
    """The owners of a unit's worklist: the organisation, its HealthcareServices and its PractitionerRoles
    (a Task reassigned within the organisation stays on its list)."""
    owners = [organisation]
    for res_type in ("HealthcareService", "PractitionerRole"):
        for page in _pages(svc, res_type, f"organization={organisation}&_count={count}"):
            owners += [f"{res_type}/{stored.res_id}" for stored in page.matches]
    return owners


def worklist_query(owners: list[str], overdue: bool, count: int) -> str:
    """The FHIR search of a unit's worklist (docs/scheduling.md shows it)."""
    codes = ",".join(f"{TASK_CODES}|{code}" for code in WORKLIST_CODES)
    pairs = [("owner", ",".join(owners)), ("status", OPEN_QUERY), ("code", codes), ("_sort", "due")]
    if overdue:
        pairs.append(("business-status", f"{BUSINESS_STATUS}|overdue"))
    pairs.append(("_count", str(count)))
    return urlencode(pairs, safe=":/|,")


def worklist(
    org: Annotated[str, typer.Option(help="The unit's organisation, by HSA-id.")],
    overdue: Annotated[bool, typer.Option(help="Only the overdue Tasks.")] = False,
) -> None:
    """Print a unit's open (or overdue) scheduled Tasks, oldest due first, with the patient count."""
    settings = Settings.from_env().for_batch()
    svc = Services.build(settings)
    try:
        found = _search(
            svc, RequestContext(principal=CLI), "Organization", "identifier=" + quote(f"{HSA}|{org}")
        )
        if not found.matches:
            console.print(f"[red]No Organization with HSA-id {escape(org)}[/red]")
            raise typer.Exit(1)
        organisation = f"Organization/{found.matches[0].res_id}"
        owners = _owners(svc, organisation, settings.max_page_size)
        query = worklist_query(owners, overdue, settings.max_page_size)
        out.print(f"FHIR: Task?{query}")
        printed, oldest = 0, ""
        patients: set[str] = set()
        for page in _pages(svc, "Task", query):
            for stored in page.matches:
                task = stored.json()
                due = str(((task.get("restriction") or {}).get("period") or {}).get("end") or "")
                # sorted by due, those without one first: the first due date is the oldest (as instants,
                # which their texts with different offsets need not be)
                oldest = oldest or due
                patient = str((task.get("for") or {}).get("reference") or "")
                if patient:  # a fault report on a device in stock concerns no patient
                    patients.add(patient)
                printed += 1
                code = next((c.get("code") for c in (task.get("code") or {}).get("coding") or []), "")
                late = " FÖRSENAD" if (task.get("businessStatus") or {}).get("coding") else ""
                out.print(
                    f"{due[:10] or '-':<10}  {code:<18} {escape(patient)}  "
                    f"Task/{task['id']}{late}  {escape(str(task.get('description', '')))}"
                )
    finally:
        svc.close()
        svc.engine.dispose()
    out.print(f"{printed} uppgifter, {len(patients)} patienter, äldsta förfallodag {oldest[:10] or '-'}")
