"""Leaf values of the adversarial world, one source per flavour: names, codes, dates and references that
are random (from a fixed seed) so that what the hidden rows hold interleaves with what the outsider's
rows hold under every sort, and is distinct from it, so a search for a hidden value finds hidden rows
only. Reference leaves name resources of the world chosen by `Pool` (policy-neutral choices: see
world_data.py)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

from gateway.model.types import SUPPORTED
from gateway.search.registry import SearchParam
from tests.security.outsider.filler import Values, required_codes

SYLLABLES = ["ka", "lo", "vi", "rn", "da", "sko", "mel", "tor", "ug", "be", "fja", "lin", "sar", "ve", "nor"]
TEST_SYSTEM = "urn:oid:1.2.752.129.2.99"  # a fictitious code system of the world's codes


class FlavourValues(Values):
    """Values for one flavour: `picks` chooses a reference target (type → `Type/id`) or None; required
    codes are split by flavour (`half` 0 or 1), so a hidden row's status is one the outsider's rows
    never have."""

    def __init__(
        self, rng: random.Random, half: int, picks: Callable[[SearchParam, str, list[str]], str | None]
    ):
        self.rng = rng
        self.half = half
        self.picks = picks

    # -- primitives --------------------------------------------------------------------------------

    def word(self, length: int = 3) -> str:
        return "".join(self.rng.choice(SYLLABLES) for _ in range(length)).capitalize()

    def code(self) -> str:
        return "".join(self.rng.choice(string.ascii_lowercase + string.digits) for _ in range(9))

    def digits(self, count: int) -> str:
        return "".join(self.rng.choice(string.digits) for _ in range(count))

    def instant(self) -> str:
        day = self.rng.randrange(0, 3 * 365)
        year, rest = 2030 + day // 365, day % 365
        month, dom = 1 + rest // 31 % 12, 1 + rest % 28
        hour, minute, second = self.rng.randrange(24), self.rng.randrange(60), self.rng.randrange(60)
        return f"{year}-{month:02d}-{dom:02d}T{hour:02d}:{minute:02d}:{second:02d}+01:00"

    def date(self) -> str:
        return self.instant()[:10]

    def period(self) -> dict[str, str]:
        start = self.instant()
        return {"start": start, "end": start[:11] + f"{min(int(start[11:13]) + 1, 23):02d}" + start[13:]}

    def bound(self, res_type: str, path: str) -> str | None:
        codes = required_codes(res_type, path)
        if not codes:
            return None
        own = codes[self.half :: 2] or codes
        return self.rng.choice(own)

    # -- Values ------------------------------------------------------------------------------------

    def leaf(self, kind: str, param: SearchParam, path: str, targets: list[str]) -> Any:
        res_type = path.split(".", 1)[0]
        if kind == "Reference":
            target = self.picks(param, path, targets)
            return {"reference": target} if target else None
        bound = self.bound(res_type, path)
        if kind in ("code", "string", "markdown", "id") and bound:
            return bound
        if kind == "code":
            return self.code()
        if kind in ("string", "markdown"):
            return self.word()
        if kind == "id":
            return self.code()
        if kind in ("uri", "url", "canonical"):
            return f"https://{self.code()}.example.se/{self.code()}"
        if kind in ("oid",):
            return f"urn:oid:1.2.752.{self.digits(4)}"
        if kind == "uuid":
            return "urn:uuid:" + "-".join(self.digits(n) for n in (8, 4, 4, 4, 12))
        if kind == "boolean":
            return self.half == 0
        if kind in ("integer", "positiveInt", "unsignedInt"):
            return self.rng.randrange(1, 10_000)
        if kind == "decimal":
            return round(self.rng.uniform(1, 1000), 2)
        if kind == "date":
            return self.date()
        if kind in ("dateTime", "instant"):
            return self.instant()
        if kind == "Period":
            return self.period()
        if kind == "Timing":
            return {"event": [self.instant()]}
        if kind == "CodeableConcept":
            if bound:
                return {"coding": [{"code": bound}]}
            word = self.word()
            return {"coding": [{"system": TEST_SYSTEM, "code": self.code(), "display": word}], "text": word}
        if kind == "Coding":
            return {"system": TEST_SYSTEM, "code": bound or self.code(), "display": self.word()}
        if kind == "Identifier":
            return {"system": f"urn:oid:1.2.752.129.2.{self.digits(3)}", "value": self.code()}
        if kind == "HumanName":
            return {"family": self.word(), "given": [self.word(2)], "text": self.word(4)}
        if kind == "Address":
            return {
                "use": "home" if self.half == 0 else "work",  # a code the outsider's rows do not share
                "line": [f"{self.word()}gatan {self.rng.randrange(1, 99)}"],
                "city": self.word(),
                "district": self.word(),
                "state": self.word(),
                "postalCode": self.digits(5),
                "country": self.word(2),
            }
        if kind == "ContactPoint":
            return {"system": "phone", "value": "07" + self.digits(8)}
        if kind in ("Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity"):
            return {
                "value": self.rng.randrange(1, 500),
                "unit": "kg",
                "system": "http://unitsofmeasure.org",
                "code": "kg",
            }
        if kind == "Range":
            low = self.rng.randrange(1, 50)
            return {"low": {"value": low}, "high": {"value": low + 10}}
        if kind == "Attachment":
            return {
                "contentType": "text/plain",
                "title": self.word(),
                "url": f"https://{self.code()}.example.se/a",
            }
        if kind == "Annotation":
            return {"text": self.word(4)}
        if kind == "Money":
            return {"value": self.rng.randrange(1, 500), "currency": "SEK"}
        if kind == "Signature":
            return None
        return None


def supported_first(targets: list[str]) -> list[str]:
    return [t for t in targets if t in SUPPORTED] + [t for t in targets if t not in SUPPORTED]
