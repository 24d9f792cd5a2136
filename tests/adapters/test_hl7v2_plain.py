"""A stay's earlier messages are read back from their Binaries without hl7apy when they are plain
(`message._plain`): the Message must be exactly the one hl7apy's reading gives, for the golden messages,
the test builders' and many generated ones; a message hl7apy would read otherwise is left to it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.adapters.hl7v2.message import _SHAPES, Shape, _plain, parse
from tests.adapters.test_hl7v2_messages import ZSV_NO_SIP, adt

GOLDEN = Path(__file__).parent.parent / "golden" / "hl7v2"
SEPARATORS = "|^~\\&"


def _both(raw: bytes) -> None:
    try:
        expected = parse(raw)
    except Exception:  # Hl7Error, or an hl7apy element without a name: refused, never read back
        return
    assert parse(raw, stored=True) == expected


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.hl7")), ids=lambda p: p.stem)
def test_golden_messages_read_back_as_hl7apy_reads_them(path: Path) -> None:
    _both(path.read_bytes())


def test_the_builders_messages_are_plain_and_read_back_the_same() -> None:
    for raw in (
        adt("A01", "C1"),
        adt("A03", "C2", discharged="20261127110000", zsv=ZSV_NO_SIP),
        adt("A08", "C3", ready="20261126", charset="8859/1", family="Åström"),
        adt("A11", "C4", zsv=None),
    ):
        text = raw.decode("latin-1" if b"8859/1" in raw else "utf-8").rstrip("\r")
        assert _plain(text, SEPARATORS) is not None
        _both(raw)


def test_what_hl7apy_reads_otherwise_is_left_to_it() -> None:
    base = adt("A01", "C9").decode().rstrip("\r")
    for changed in (
        base.replace("Tolvansson", "Tolv\\S\\ansson"),  # an escape: hl7apy re-escapes some
        base.replace("LUNG^12^1^Karolinska", "LUNG" + "^" * 19 + "z"),  # past PL's components: moved
        base.replace("PID|1||", "PID|1^2||"),  # components in a primitive field
        base + "\rPID" + "|" * 45 + "x",  # past the segment's fields
    ):
        assert _plain(changed, SEPARATORS) is None
        _both(changed.encode())


PARTS = [
    "",
    "",
    "a",
    "Åb",
    "12",
    "0180",
    "x y",
    "SE2321000016-X1",
    "20261120",
    "202611200800",
    "20261120080000.1",
]


def _field(rng: random.Random, shape: Shape) -> str:
    """A field of random parts, mostly within its shape (`_SHAPES`), now and then past it."""
    wild = rng.random() < 0.03
    reps = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if isinstance(shape, str):
            reps.append("^".join(rng.choice(PARTS) for _ in range(2 if wild else 1)))
            continue
        kinds = list(shape) + (["ST"] * 12 if wild else [])
        components = []
        for kind in kinds[: rng.randint(1, len(kinds))]:
            subs = rng.randint(1, (1 if isinstance(kind, str) else len(kind)) + (2 if wild else 0))
            components.append("&".join(rng.choice(PARTS) for _ in range(subs)))
        reps.append("^".join(components))
    return "~".join(reps)


def test_generated_messages_read_back_as_hl7apy_reads_them() -> None:
    rng = random.Random(16)
    msh = (
        "MSH|^~\\&|COSMIC|Karolinska^SE2321000016-KS01^L|GATEWAY|REGION|20261120081500||ADT^A01^ADT_A01|1|P|"
        "2.5|||||SWE|UNICODE UTF-8"
    )
    plain = 0
    for _ in range(100):
        segments = [msh]
        for name in ("EVN", "PID", "PD1", "PV1", "ZSV"):
            shape = _SHAPES.get(name, (("ST", "ST", "ST"),) * 9)
            values = [""] * rng.randrange(len(shape) + 1)
            for i in rng.sample(range(len(values)), min(len(values), 4)):
                values[i] = _field(rng, shape[i])
            segments.append("|".join([name, *values]))
        text = "\r".join(segments)
        plain += _plain(text, SEPARATORS) is not None
        _both(text.encode())
    assert plain > 20  # the comparison covered the split, not only the messages left to hl7apy
