"""The ids the adapters derive from source keys, for tests (no tests of its own): golden files are built
under a fixed installation secret, so their expected Bundles stay the same wherever they run; the other
tests compute ids under the secret of the gateway they talk to."""

from __future__ import annotations

from gateway.adapters.bestallningsportalen import order_keys
from gateway.adapters.ids import SourceIds
from gateway.config import Settings
from gateway.services import Services
from tests.conftest import TEST_KEY_SECRET

GOLDEN_SECRET = "golden files: a fixed installation secret, never a real one"
GOLDEN_IDS = SourceIds(GOLDEN_SECRET)


def ids_of(where: Services | Settings) -> SourceIds:
    return SourceIds.of(where.settings if isinstance(where, Services) else where)


def order_ids(where: Services | Settings, ordernummer: str, portal: str = "BP") -> order_keys.OrderIds:
    """The ids of an order's resources (of the installation's default portal unless told)."""
    return order_keys.OrderIds(ids_of(where), portal, ordernummer)


def bp(ordernummer: str, part: str = "provenance", portal: str = "BP") -> str:
    """The id of an order's resource (`r1`: line 1; `task`, `confirm`, `followup`, `selfcare`,
    `provenance`), as the test fixtures' gateway derives it (under their key secret, TEST_KEY_SECRET)."""
    ids = order_ids(Settings(key_secret=TEST_KEY_SECRET), ordernummer, portal)
    if part.startswith("r") and part[1:].isdigit():
        return ids.line(int(part[1:]))
    found: str = getattr(ids, part)
    return found
