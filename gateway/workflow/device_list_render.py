"""The device list in Swedish: the List's narrative (FHIR XHTML) and a printable HTML page a patient can
keep by the phone (server-rendered, no JavaScript). Every value is escaped."""

from __future__ import annotations

from html import escape

from gateway.workflow.device_list_view import Contact, Row, View

XHTML = "http://www.w3.org/1999/xhtml"
CSP = "default-src 'none'; style-src 'unsafe-inline'"  # no script, nothing fetched
STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 12pt; margin: 1.5em; color: #000; }
h1 { font-size: 18pt; margin: 0 0 .2em 0; }
p.meta { margin: 0 0 1em 0; }
section.item { border: 1px solid #444; padding: .5em .8em; margin: 0 0 .8em 0; page-break-inside: avoid; }
section.item h2 { font-size: 14pt; margin: 0 0 .3em 0; }
dl { display: grid; grid-template-columns: 12em 1fr; gap: .15em .8em; margin: 0; }
dt { font-weight: bold; }
dd { margin: 0; }
.flag { border: 2px solid #000; padding: .4em .8em; margin: 0 0 1em 0; }
.flag p { font-weight: bold; margin: 0; }
.flag ul { margin: .2em 0 0 0; }
@media print { body { margin: 0; } }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def contact_text(contacts: list[Contact]) -> str:
    """Plain text: "MAH, tel 08-123 45 67 (mån–fre 08:00–16:00); …"."""
    parts = []
    for contact in contacts:
        text = contact.name
        if contact.phones:
            text += ", tel " + ", ".join(contact.phones)
        if contact.hours:
            text += " (" + "; ".join(contact.hours) + ")"
        parts.append(text)
    return "; ".join(p for p in parts if p) or "uppgift saknas"


def facts(row: Row) -> list[tuple[str, str]]:
    """The row's facts as (label, text), in the order shown."""
    found = [
        ("Hjälpmedel", row.what + (f" (ISO 9999 {row.iso9999})" if row.iso9999 else "")),
        ("Serienummer", row.serial),
        ("Artikelnummer", row.article),
        ("Ägare", row.owner or "uppgift saknas"),
        ("Förskrivare", row.prescriber or "uppgift saknas"),
        ("Hanteras av", row.handled_by),
        ("Vid fel, ring", contact_text(row.faults)),
        ("Frågor om behandlingen", contact_text(row.treatment)),
        ("Nästa uppföljning", row.follow_up),
        ("Nästa kontroll och rengöring", row.control),
        ("Nästa service", row.service),
        ("Öppna uppgifter", "; ".join(row.tasks)),
    ]
    return [(label, text) for label, text in found if text]


def _flags(view: View) -> str:
    """The active Flags, first on the page: the heading, then the fired rules' explanations."""
    parts = []
    for flag in view.flags:
        reasons = "".join(f"<li>{_e(reason)}</li>" for reason in flag.reasons)
        parts.append(
            f'<div class="flag"><p>{_e(flag.heading())}</p>'
            + (f"<ul>{reasons}</ul>" if reasons else "")
            + "</div>"
        )
    return "".join(parts)


def narrative(view: View) -> str:
    """The List's `text.div`: every item with its facts, in Swedish."""
    parts = [f'<div xmlns="{XHTML}">']
    for flag in view.flags:  # the flag first (issue 19: "the flag is shown at the top of the list")
        parts.append(f"<p><b>{_e(flag.heading())}</b></p>")
        if flag.reasons:
            parts += ["<ul>", *(f"<li>{_e(reason)}</li>" for reason in flag.reasons), "</ul>"]
    parts.append(f"<p><b>Hjälpmedelsförteckning för {_e(view.patient or 'patienten')}</b></p>")
    if not view.rows:
        parts.append("<p>Inga hjälpmedel i hemmet är kända.</p>")
    for row in view.rows:
        parts.append(f"<p><b>{_e(row.what)}</b></p><ul>")
        parts += [f"<li>{_e(label)}: {_e(text)}</li>" for label, text in facts(row)]
        parts.append("</ul>")
    parts.append("</div>")
    return "".join(parts)


def page(view: View, generated: str) -> str:
    """The printable page: a whole HTML document, no script."""
    items = []
    for row in view.rows:
        facts_html = "".join(f"<dt>{_e(label)}</dt><dd>{_e(text)}</dd>" for label, text in facts(row))
        items.append(f'<section class="item"><h2>{_e(row.what)}</h2><dl>{facts_html}</dl></section>')
    if not items:
        items.append("<p>Inga hjälpmedel i hemmet är kända.</p>")
    title = f"Hjälpmedelsförteckning – {view.patient}" if view.patient else "Hjälpmedelsförteckning"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="sv"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f"{_flags(view)}<h1>{_e(title)}</h1>"
        f'<p class="meta">Utskriven {_e(generated)}. Spara listan nära telefonen.</p>'
        f"{''.join(items)}"
        "</body></html>\n"
    )
