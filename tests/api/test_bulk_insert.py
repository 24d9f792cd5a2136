"""`insert_all` stores every kind of value it is given exactly, on SQLite and on PostgreSQL (where the rows
travel as one JSON parameter): text with å ä ö and quotes, NULLs, the open ends of date ranges, fractions of
a second, floats and booleans."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select

from gateway.hooks import RequestContext
from gateway.search.dates import MAX, MIN
from gateway.services import Services
from gateway.store.bulk import insert_all
from gateway.store.repository import R, V
from gateway.store.tables import DateIndex, NumberIndex, TokenIndex

CONTEXT = RequestContext(base_url="http://test/fhir")


def test_every_kind_of_value_survives_a_bulk_insert(services: Services) -> None:
    rid = services.write_path.run(
        CONTEXT, lambda uow: services.write_path.create(uow, {"resourceType": "Patient"}).stored.rid
    )
    tokens = [
        {"rid": rid, "res_type": "Patient", "param": "bulk", "system": None, "code": 'Åsa "O\'Öberg" \\ %s'},
        {"rid": rid, "res_type": "Patient", "param": "bulk", "system": "urn:x", "code": "ä"},
    ]
    dates = [
        {"rid": rid, "res_type": "Patient", "param": "bulk", "low": MIN, "high": MAX},
        {"rid": rid, "res_type": "Patient", "param": "bulk", "low": datetime(2026, 3, 29, 1, 0, 0, 123456),
         "high": datetime(2026, 3, 29, 1, 0, 1)},
    ]  # fmt: skip
    numbers = [
        {"rid": rid, "res_type": "Patient", "param": "bulk", "value": value} for value in (0.1, -3.0, 1e300)
    ]
    versions = [
        {"res_type": "Patient", "res_id": "bulk", "version_id": n, "last_updated": MIN, "method": "PUT",
         "deleted": n == 2, "content": '{"resourceType": "Patient", "id": "bulk"}'}
        for n in (1, 2)
    ]  # fmt: skip
    table: dict[str, Table] = {
        "token": cast(Table, TokenIndex.__table__),
        "date": cast(Table, DateIndex.__table__),
        "number": cast(Table, NumberIndex.__table__),
    }
    with services.engine.begin() as connection:
        insert_all(connection, table["token"], tokens)
        insert_all(connection, table["date"], dates)
        insert_all(connection, table["number"], numbers)
        insert_all(connection, V, versions)

    def stored(source: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = list(rows[0])
        with services.engine.connect() as connection:
            found = connection.execute(select(*(source.c[k] for k in keys)).where(source.c.param == "bulk"))
            return [dict(row._mapping) for row in found]

    assert sorted(stored(table["token"], tokens), key=str) == sorted(tokens, key=str)
    assert sorted(stored(table["date"], dates), key=str) == sorted(dates, key=str)
    assert sorted(n["value"] for n in stored(table["number"], numbers)) == [-3.0, 0.1, 1e300]
    with services.engine.connect() as connection:
        keys = [V.c[k] for k in versions[0]]
        found = connection.execute(select(*keys).where(V.c.res_id == "bulk").order_by(V.c.version_id))
        assert [dict(row._mapping) for row in found] == versions
        assert connection.execute(select(R.c.rid).where(R.c.rid == rid)).scalar() == rid
