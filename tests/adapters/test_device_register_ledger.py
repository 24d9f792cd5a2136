"""The register export's ledger: what an export has listed, kept in a temporary SQLite file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.adapters import mapping as m
from gateway.adapters.device_register.ledger import Ledger

SESAM = m.unit_system("SESAM")


def test_a_units_first_row_is_remembered_and_a_later_row_gets_it_back() -> None:
    ledger = Ledger()
    assert ledger.first((SESAM, "SES-1"), 2, "content-a") == (2, "content-a")
    assert ledger.first((SESAM, "SES-2"), 3, "content-b") == (3, "content-b")
    assert ledger.first((SESAM, "SES-1"), 9, "content-c") == (2, "content-a")
    assert ledger.first((m.unit_system("MEDUSA"), "SES-1"), 10, "content-d") == (10, "content-d")
    ledger.close()


def test_a_register_spelt_two_ways_is_one_register_named_as_first_spelt() -> None:
    ledger = Ledger()
    ledger.note("SESAM", "SES-1")
    ledger.note("sesam", "SES-2")
    ledger.note("MEDUSA", "MAH-1")
    assert ledger.registers() == [("MEDUSA", m.unit_system("MEDUSA")), ("SESAM", SESAM)]
    assert ledger.unlisted(SESAM, [(1, "SES-1"), (2, "SES-2"), (3, "SES-3")]) == [3]
    ledger.close()


def test_a_unit_is_listed_when_any_of_its_numbers_in_the_register_is() -> None:
    ledger = Ledger()
    ledger.note("SESAM", "SES-1")
    ledger.note("MEDUSA", "SES-2")  # another register's number: does not list SESAM's unit 2
    claims = [(5, "SES-9"), (1, "SES-0"), (1, "SES-1"), (2, "SES-2"), (4, "SES-4")]
    assert ledger.unlisted(SESAM, iter(claims)) == [2, 4, 5]
    # asked again (another register of the export): only what is given now counts
    assert ledger.unlisted(SESAM, [(7, "SES-7")]) == [7]
    ledger.close()


def test_claims_that_break_off_leave_the_ledger_usable() -> None:
    ledger = Ledger()
    ledger.note("SESAM", "SES-1")

    def broken() -> Iterator[tuple[int, str]]:
        yield 1, "SES-1"
        yield 2, "SES-2"
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        ledger.unlisted(SESAM, broken())
    # as a unit of work run again would: the claims given anew, nothing left of the broken call
    assert ledger.unlisted(SESAM, [(1, "SES-1"), (3, "SES-3")]) == [3]
    ledger.close()


def test_an_export_of_many_units_finds_the_few_it_does_not_list() -> None:
    ledger = Ledger()
    for number in range(50_000):
        ledger.note("SESAM", f"SES-{number}")
    claims = ((rid, f"SES-{rid}") for rid in range(50_010))
    assert ledger.unlisted(SESAM, claims) == list(range(50_000, 50_010))
    ledger.close()
