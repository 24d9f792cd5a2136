"""The device list as a printable Swedish page (`$device-list?_format=html`, issue 19): fetched with a
token, rendered by Debian's `chromium --headless` (a screenshot and the DOM it built), its text checked.
The browser is installed where missing and possible (root with apt-get); CI installs it (.ci/run) and
never skips; elsewhere, without one, the test is skipped saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.adapters.directory.cli import import_directory_files
from tests.workflow.journey import Journey, journey, secured
from tests.workflow.test_device_list import LIST_URL, seed
from tests.workflow.test_directory import EXTRACT

__all__ = ["journey", "secured"]  # fixtures

HOSTILE = '<script>alert("x")</script> & "Jour"'


def browser() -> str:
    """Debian's chromium: found, or installed (root with apt-get); else a skip with the reason (a failure
    in CI, which installs it)."""
    found = shutil.which("chromium")
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],
            capture_output=True,
            timeout=900,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("chromium")
    if found is None:
        reason = "no chromium: install Debian's chromium (apt-get install chromium) to render the page"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_the_printable_page_renders_in_headless_chromium(journey: Journey, tmp_path: Path) -> None:
    chromium = browser()
    j = journey
    patient = seed(j)["patient"]
    _, problems = import_directory_files(j.services, [EXTRACT], None)
    assert problems == []
    mah = j.organization("SE2321000016-MAH1")
    hostile = {"resourceType": "HealthcareService", "providedBy": {"reference": f"Organization/{mah}"}}
    j.post("region", {**hostile, "name": HOSTILE, "telecom": [{"system": "phone", "value": "08-1"}]})

    url = f"/fhir/{LIST_URL.format(patient)}"
    fetched = j.http.get(f"{url}?_format=html", headers=j.headers["ka"])
    assert fetched.status_code == 200, fetched.text
    assert fetched.headers["content-type"].startswith("text/html")
    html = fetched.text
    assert "<script" not in html and "&lt;script&gt;" in html  # escaped, no JavaScript of its own
    preferred = j.http.get(
        url, headers={**j.headers["ka"], "Accept": "text/html,application/fhir+json;q=0.9"}
    )
    assert preferred.status_code == 200 and preferred.headers["content-type"].startswith("text/html")
    assert (
        j.http.get(url, headers=j.headers["ka"]).headers["content-type"].startswith("application/fhir+json")
    )
    hidden = j.http.get(f"{url}?_format=html", headers=j.headers["kb"])
    assert hidden.status_code == 404 and "Syrgas" not in hidden.text

    page = tmp_path / "lista.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "lista.png"
    rendered = headless(
        chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1000,2400", page.as_uri()
    )
    assert shot.is_file() and shot.stat().st_size > 10_000, rendered.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = headless(chromium, tmp_path / "profile", "--dump-dom", page.as_uri())
    text = dom.stdout
    assert "<script" not in text  # the hostile name stayed text
    for expected in (
        "Hjälpmedelsförteckning – Tolvan Tolvansson",
        "Syrgaskoncentrator stationär",
        "Rollator",
        "Näsgrimma",
        "Hjälpmedelscentralen Söder",
        "Frida Förskrivare, läkare, Lungmottagningen",
        "Vid fel, ring",
        "08-123 456 00",
        "mån–fre 08:00–16:00",
        "Frågor om behandlingen",
        "08-517 700 10",
        '&lt;script&gt;alert("x")&lt;/script&gt; &amp; "Jour"',
        "Högriskpatient",  # the flag, first (an old patient with an oxygen concentrator)
        "föreslagen, ej bekräftad",
        "Patienten är 80 år eller äldre.",
    ):
        assert expected in text, (expected, text[:3000])
    assert text.index("Högriskpatient") < text.index("<h1>Hjälpmedelsförteckning – Tolvan")
