"""The device list's pure parts: format negotiation (JSON, HTML, else 406), opening hours in Swedish,
and escaping in the narrative and the page."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from gateway.errors import FhirError
from gateway.fhir.device_list import wants_html
from gateway.workflow.device_list_render import narrative, page
from gateway.workflow.device_list_view import Contact, FlagView, Row, View, hours


def request(query: str = "", accept: str | None = None) -> Request:
    headers = [(b"accept", accept.encode())] if accept is not None else []
    return Request(
        {"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": headers}
    )


@pytest.mark.parametrize(
    ("query", "accept", "html"),
    [
        ("", None, False),
        ("_format=html", None, True),
        ("_format=text/html", None, True),
        ("_format=json", "text/html", False),
        ("", "text/html", True),
        ("", "text/html,application/xhtml+xml,*/*;q=0.8", True),
        ("", "application/fhir+json, text/html;q=0.5", False),
        ("", "text/html;q=0.4, application/json;q=0.9", False),
        ("", "*/*", False),
    ],
)
def test_the_format_asked_for(query: str, accept: str | None, html: bool) -> None:
    assert wants_html(request(query, accept)) is html


@pytest.mark.parametrize(("query", "accept"), [("_format=xml", None), ("", "application/fhir+xml")])
def test_other_formats_are_not_acceptable(query: str, accept: str | None) -> None:
    with pytest.raises(FhirError) as raised:
        wants_html(request(query, accept))
    assert raised.value.status == 406


def test_opening_hours_in_swedish() -> None:
    times = [
        {
            "daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
            "availableStartTime": "08:00:00",
            "availableEndTime": "16:00:00",
        },
        {"daysOfWeek": ["sat", "sun"], "allDay": True},
        {"daysOfWeek": ["fri"], "openingTime": "09:00:00", "closingTime": "12:00:00"},
    ]
    assert hours(times) == ["mån–fre 08:00–16:00", "lör, sön dygnet runt", "fre 09:00–12:00"]


def test_every_value_is_escaped() -> None:
    hostile = '<img src=x onerror="alert(1)"> & co'
    row = Row("Device/1", hostile, owner=hostile, faults=[Contact(hostile, ["<b>08</b>"], [])])
    flag = FlagView(hostile, proposed=True, reasons=[f"regel: {hostile}"])
    shown = View(hostile, [row], [flag], [])
    for text in (narrative(shown), page(shown, "2026-12-07 08:00 UTC")):
        assert "<img" not in text and "<b>08" not in text and "<script" not in text
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; co" in text
        assert "regel: &lt;img" in text and "föreslagen, ej bekräftad" in text
    assert narrative(shown).startswith('<div xmlns="http://www.w3.org/1999/xhtml">')


def test_the_flag_comes_first_with_its_explanations() -> None:
    flag = FlagView("Högriskpatient (hög ålder)", proposed=False, reasons=["hög ålder: Patienten är 80 år."])
    shown = View("Anna Andersson", [Row("Device/1", "Rollator")], [flag], [])
    div = narrative(shown)
    assert div.index("Högriskpatient") < div.index("Hjälpmedelsförteckning för") < div.index("Rollator")
    assert "hög ålder: Patienten är 80 år." in div and "föreslagen" not in div
    printed = page(shown, "2026-12-07 08:00 UTC")
    assert printed.index('class="flag"') < printed.index("<h1>") < printed.index("Rollator</h2>")
