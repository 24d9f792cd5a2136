"""The adversarial world, seeded once per test session and database (world.py): the cases only read it,
or undo what they write, so one world serves them all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Database
from tests.security.outsider.world import World, build


@pytest.fixture(scope="session")
def world(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from build(database, tmp_path_factory.mktemp("outsider"))
