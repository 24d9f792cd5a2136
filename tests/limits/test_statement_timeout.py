"""The statement timeout (GATEWAY_STATEMENT_TIMEOUT) through the real app on both databases: a slow
search is stopped at it and answered 503 naming the setting, within a batch as that entry's answer while
the next entry is served, and the next requests as before; outside an HTTP request nothing is stopped.
(A client's disconnect stopping its query: tests/limits/test_disconnect.py, on a real server.)"""

from __future__ import annotations

import time

from sqlalchemy import text

from gateway.limits import deadline
from tests.conftest import Database
from tests.limits.conftest import bounded_app
from tests.limits.slow import seed, slow_search

TIMEOUT = 0.2


def test_a_slow_search_is_stopped_at_the_statement_timeout(database: Database) -> None:
    with bounded_app(database, statement_timeout=TIMEOUT) as app:
        seed(database.engine)
        client, headers = app.client, app.headers
        started = time.monotonic()
        stopped = client.get(f"/fhir/{slow_search()}", headers=headers)
        took = time.monotonic() - started
        body = app.outcome(stopped, 503, "GATEWAY_STATEMENT_TIMEOUT")
        assert body["issue"][0]["code"] == "too-costly"
        assert took < TIMEOUT + 3, took  # stopped, not run to its end
        batch = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"request": {"method": "GET", "url": slow_search()}},
                {"request": {"method": "GET", "url": "Patient/slow-1"}},
            ],
        }
        answer = client.post("/fhir", json=batch, headers=headers)
        assert answer.status_code == 200, answer.text
        first, second = answer.json()["entry"]
        assert first["response"]["status"].startswith("503")
        assert "GATEWAY_STATEMENT_TIMEOUT" in first["response"]["outcome"]["issue"][0]["diagnostics"]
        # The timeout is each statement's: the next entry is served.
        assert second["response"]["status"].startswith("200"), second
        # The connections stopped are served again, and quick requests are not stopped.
        for number in range(1, 11):
            found = client.get(f"/fhir/Patient?_id=slow-{number}", headers=headers)
            assert found.status_code == 200, found.text
            assert [e["resource"]["id"] for e in found.json()["entry"]] == [f"slow-{number}"]
    # Outside an HTTP request (a batch command, the audit writer) there is no deadline.
    assert deadline.current() is None
    with database.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
