"""Reading an HL7 v2 message: bytes → text (by MSH-18) → hl7apy → field access by `SEG-n.c.s` paths.

hl7apy checks the message (segment names, the MSH structure, the version) and splits it into segments and
field repetitions; components and subcomponents are read from each repetition's ER7 text, unescaped.
Problems are `Hl7Error`s carrying the acknowledgement code they deserve: `AR` for what is not HL7 or not
supported, `AE` for a message understood but not applicable (a field missing or invalid)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import hl7apy  # type: ignore[import-untyped]
import hl7apy.core  # type: ignore[import-untyped]
import hl7apy.factories  # type: ignore[import-untyped]
from hl7apy.consts import VALIDATION_LEVEL  # type: ignore[import-untyped]
from hl7apy.factories import datatype_factory
from hl7apy.parser import parse_message  # type: ignore[import-untyped]

from gateway.adapters.hl7v2.mappings import MAPPINGS

# hl7apy looks its library module up by name (importlib) for every element it makes, some 1,200 times a
# message: a fifth of a parse. A version's module never changes, so it is looked up once.
hl7apy.load_library = hl7apy.core.load_library = hl7apy.factories.load_library = functools.cache(
    hl7apy.load_library
)

START, END = b"\x0b", b"\x1c\x0d"
SUPPORTED_VERSIONS = ("2.5", "2.5.1")


class Hl7Error(Exception):
    """A message that cannot be applied: `code` AR (rejected) or AE (error), `location` like `PID-3`."""

    def __init__(self, code: str, text: str, location: str = "", hl7_error: str = "207") -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.location = location
        self.hl7_error = hl7_error  # HL7 table 0357: 100 segment sequence, 101 required field missing, …

    def __reduce__(self) -> tuple[type[Hl7Error], tuple[str, str, str, str]]:
        """Pickled whole (a message may be parsed in another process)."""
        return Hl7Error, (self.code, self.text, self.location, self.hl7_error)


@dataclass(frozen=True)
class Repetition:
    """One repetition of a field: components, each a list of subcomponents, already unescaped."""

    components: tuple[tuple[str, ...], ...]

    def get(self, component: int = 1, subcomponent: int = 1) -> str:
        if component > len(self.components):
            return ""
        subs = self.components[component - 1]
        return subs[subcomponent - 1] if subcomponent <= len(subs) else ""

    @property
    def empty(self) -> bool:
        return not any(s for c in self.components for s in c)


@dataclass
class Message:
    raw: bytes
    charset: str
    segments: list[tuple[str, list[list[Repetition]]]] = field(default_factory=list)

    def segment(self, name: str) -> list[list[Repetition]] | None:
        for seg_name, fields in self.segments:
            if seg_name == name:
                return fields
        return None

    def repetitions(self, path: str) -> list[Repetition]:
        """`PID-3`: every non-empty repetition of the field (of the first such segment)."""
        seg_name, _, number = path.partition("-")
        fields = self.segment(seg_name)
        index = int(number.split(".")[0])
        if fields is None or index > len(fields):
            return []
        return [r for r in fields[index - 1] if not r.empty]

    def get(self, path: str) -> str:
        """`PV1-7.2` or `PD1-3.6.2`: the value of the first repetition, "" when absent."""
        seg_field, *rest = path.split(".")
        reps = self.repetitions(seg_field)
        if not reps:
            return ""
        component = int(rest[0]) if rest else 1
        subcomponent = int(rest[1]) if len(rest) > 1 else 1
        return reps[0].get(component, subcomponent).strip()

    @property
    def trigger(self) -> str:
        return self.get("MSH-9.2")

    @property
    def control_id(self) -> str:
        return self.get("MSH-10")

    @property
    def facility(self) -> str:
        """The sending facility's HSA-id: MSH-4 as `Name^HSA-id^L`, or the HSA-id alone."""
        return self.get("MSH-4.2") or self.get("MSH-4.1")

    @property
    def facility_name(self) -> str:
        return self.get("MSH-4.1") if self.get("MSH-4.2") else ""


def unframe(data: bytes) -> bytes:
    """Remove MLLP framing when a message still carries it."""
    data = data.strip(b" \t\r\n")
    if data.startswith(START):
        data = data[1:]
    if data.endswith(END):
        data = data[: -len(END)]
    elif data.endswith(b"\x1c"):
        data = data[:-1]
    return data


def split_messages(data: bytes) -> list[bytes]:
    """A file of one or more messages (each starting with MSH, segments by CR, LF or CRLF)."""
    data = data.replace(START, b"").replace(b"\x1c", b"")
    lines = re.split(rb"\r\n|\r|\n", data)
    messages: list[list[bytes]] = []
    for line in lines:
        if not line.strip():
            continue
        if line.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(line)
    return [b"\r".join(m) for m in messages]


def _charset(data: bytes) -> str:
    first = data.split(b"\r", 1)[0].decode("latin-1")
    if len(first) < 8:
        raise Hl7Error("AR", "The message has no MSH segment", "MSH", "100")
    parts = first.split(first[3])
    declared = parts[17].strip().upper() if len(parts) > 17 else ""
    charsets: dict[str, str] = MAPPINGS.encounter["charset"]
    if declared not in charsets:
        raise Hl7Error("AR", f"Unsupported character set in MSH-18: {declared}", "MSH-18", "203")
    return charsets[declared]


def _unescape(text: str, sep: str) -> str:
    if "\\" not in text:
        return text
    field_sep, comp, rep, esc, sub = sep[0], sep[1], sep[2], sep[3], sep[4]
    table = {"F": field_sep, "S": comp, "R": rep, "E": esc, "T": sub, ".br": "\n"}

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in table:
            return table[code]
        if code.startswith("X"):
            try:
                return bytes.fromhex(code[1:]).decode("latin-1")
            except ValueError:
                return ""
        return ""

    return re.sub(re.escape(esc) + r"(.*?)" + re.escape(esc), one, text)


# The most segments a message may have (an ADT message has a dozen or so; OBX and NTE may repeat).
MAX_SEGMENTS = 1000


def parse(data: bytes, stored: bool = False) -> Message:
    """Bytes (with or without MLLP framing; CR, LF or CRLF between segments) to a Message, or Hl7Error.
    `stored`: a message accepted before (a stay's earlier message read back from its Binary), which
    hl7apy need not check again: when it is plain (`_plain`), it is split here without hl7apy."""
    lines = [line for line in re.split(rb"\r\n|\r|\n", unframe(data)) if line.strip()]
    data = b"\r".join(lines)
    if not data.startswith(b"MSH") or len(data) < 9:
        raise Hl7Error("AR", "Not an HL7 v2 message: it does not start with an MSH segment", "MSH", "100")
    charset = _charset(data)
    try:
        text = data.decode(charset)
    except UnicodeDecodeError as error:
        problem = f"The message is not valid {charset} as MSH-18 says: {error}"
        raise Hl7Error("AR", problem, "MSH-18", "203") from error
    field_sep = text[3]
    encoding = text[4:8]
    separators_ok = (
        len(encoding) == 4
        and not field_sep.isalnum()
        and len(set(field_sep + encoding)) == 5
        and not any(char.isalnum() or char in "\r\n" for char in encoding)
        and text[8:9] == field_sep
    )
    if not separators_ok:
        raise Hl7Error(
            "AR",
            "MSH-1 and MSH-2 do not hold the separators: a message begins with MSH, the field separator "
            "(usually a vertical bar), four different encoding characters (usually caret, tilde, backslash "
            "and ampersand) and the field separator again",
            "MSH-2",
            "102",
        )
    msh = text.split("\r", 1)[0].split(field_sep)
    version = msh[11].split(encoding[0])[0] if len(msh) > 11 else ""
    if version not in SUPPORTED_VERSIONS:
        raise Hl7Error("AR", f"Unsupported HL7 version in MSH-12: {version or 'none'}", "MSH-12", "203")
    kind = msh[8].split(encoding[0]) if len(msh) > 8 else []
    if kind[:1] != ["ADT"] or len(kind) < 2 or kind[1] not in MAPPINGS.triggers:
        shown = "^".join(kind) or "none"
        raise Hl7Error("AR", f"Unsupported message type in MSH-9: {shown}", "MSH-9", "200")
    if len(lines) > MAX_SEGMENTS:  # refused before hl7apy reads it: ~0.6 ms a segment, more past 10 000
        raise Hl7Error("AR", f"The message has {len(lines)} segments; at most {MAX_SEGMENTS}", "", "100")
    separators = field_sep + encoding
    if stored:
        plain = _plain(text, separators)
        if plain is not None:
            return Message(data, charset, plain)
    try:
        parsed = parse_message(
            text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT, force_validation=False
        )
    except Exception as error:  # hl7apy raises many kinds; each means the same: not a readable message
        raise Hl7Error("AR", f"Not a readable HL7 v2.5 message: {error}", "", "102") from error
    message = Message(data, charset)
    for segment in parsed.children:
        fields: list[list[Repetition]] = []
        offset = 2 if segment.name == "MSH" else 0  # MSH-1 and MSH-2 are the separators themselves
        for child in segment.children:
            try:
                number = int(child.name.rsplit("_", 1)[1]) - offset
            except (IndexError, ValueError):
                continue
            if number < 1:
                continue
            while len(fields) < number:
                fields.append([])
            fields[number - 1].append(_repetition(child.to_er7(), separators))
        if segment.name == "MSH":
            fields = [[], [], *fields]
        message.segments.append((segment.name, fields))
    return message


def _repetition(er7: str, separators: str) -> Repetition:
    comp, sub = separators[1], separators[4]
    return Repetition(tuple(tuple(_unescape(s, separators) for s in c.split(sub)) for c in er7.split(comp)))


# -- plain messages, split without hl7apy -------------------------------------------------------------


# A field's shape: its data type when primitive, else each component's (a primitive's type, or the
# types of its subcomponents).
Shape = str | tuple[str | tuple[str, ...], ...]
TEXT = frozenset({"ST", "ID", "IS", "TX", "FT", "GTS"})  # hl7apy gives these back as written (no escapes)


def _shapes(version: str = "2.5") -> dict[str, tuple[Shape, ...]]:
    """Each field's shape in each segment hl7apy knows."""

    def shape(ref: Any) -> Any:
        return ref[2] if ref[0] == "leaf" else tuple(shape(child[1]) for child in ref[1])

    return {
        name: tuple(shape(ref) for _, ref, _, _ in fields)
        for name, (_, fields) in hl7apy.load_library(version).ELEMENTS["Segment"].items()
        if all(ref is not None for _, ref, _, _ in fields)  # not ANYHL7SEGMENT
    }


def _as_written(kind: str, value: str) -> bool:
    """Whether hl7apy gives a primitive value back as written: text does; it reformats numbers and
    times (`0180` is 180), so those are asked of hl7apy's own data type."""
    if not value or kind in TEXT:
        return True
    try:
        written: str = datatype_factory(kind, value, "2.5", VALIDATION_LEVEL.TOLERANT).to_er7()
    except Exception:
        return False
    return written == value


def _trimmed(parts: list[str]) -> list[str]:
    """hl7apy leaves out empty trailing components and subcomponents (keeping one)."""
    while len(parts) > 1 and not parts[-1]:
        parts.pop()
    return parts


def _plain(text: str, separators: str) -> list[tuple[str, list[list[Repetition]]]] | None:
    """The segments of a message as `parse` builds them from hl7apy's reading, split here without it;
    None when the message is not plain, and hl7apy might read it otherwise than this: an escape
    character anywhere past MSH-2, a segment hl7apy does not know (Z-segments it keeps as written), more
    fields than the segment has, a repetition with more components or subcomponents than its data type,
    or a number or time hl7apy would write otherwise (tests/adapters/test_hl7v2_plain.py compares)."""
    field_sep, comp, rep, esc, sub = separators[0], separators[1], separators[2], separators[3], separators[4]
    if esc in text[8:]:
        return None
    segments: list[tuple[str, list[list[Repetition]]]] = []
    for line in text.split("\r"):
        values = line.split(field_sep)
        name = values[0]
        shapes = _SHAPES.get(name)
        if shapes is None and not (len(name) == 3 and name.startswith("Z") and name.isalnum()):
            return None
        offset = 1 if name == "MSH" else 0  # MSH-1 is the field separator: values[i] is MSH-(i + 1)
        if shapes is not None and len(values) - 1 + offset > len(shapes):
            return None
        fields: list[list[Repetition]] = [[], []] if offset else []
        for i in range(1 + offset, len(values)):  # MSH-2, the encoding characters, is left out too
            if not values[i]:
                continue
            number = i + offset
            reps = []
            for er7 in values[i].split(rep):
                if shapes is None:  # a Z-segment: as written
                    reps.append(Repetition(tuple(tuple(c.split(sub)) for c in er7.split(comp))))
                    continue
                read = _read(shapes[number - 1], er7, comp, sub)
                if read is None:
                    return None
                reps.append(read)
            while len(fields) < number:
                fields.append([])
            fields[number - 1] = reps
        segments.append((name, fields))
    return segments


def _read(shape: Shape, er7: str, comp: str, sub: str) -> Repetition | None:
    """One repetition of a field of a segment hl7apy knows, as hl7apy reads it (None: not plain)."""
    if isinstance(shape, str):
        if comp in er7 or sub in er7 or not _as_written(shape, er7):
            return None
        return Repetition(((er7,),))
    components = _trimmed(er7.split(comp))
    if len(components) > len(shape):
        return None
    read = []
    for kind, component in zip(shape, components, strict=False):
        subs = _trimmed(component.split(sub))
        kinds = (kind,) if isinstance(kind, str) else kind
        if len(subs) > len(kinds) or not all(_as_written(k, v) for k, v in zip(kinds, subs, strict=False)):
            return None
        read.append(tuple(subs))
    return Repetition(tuple(read))


_SHAPES = _shapes()


# -- times ---------------------------------------------------------------------------------------------

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$")


def parse_time(value: str, zone: ZoneInfo, where: str) -> datetime | date | None:
    """HL7 DT/DTM: a date (day precision) or an aware datetime; without an offset, local time in `zone`."""
    value = value.strip()
    if not value:
        return None
    match = _DTM.match(value)
    if not match or match.group(3) is None:
        raise Hl7Error("AE", f"{where} is not an HL7 date-time (YYYYMMDD[HHMM[SS]]): {value}", where, "102")
    year, month, day, hour, minute, second, _, offset = match.groups()
    try:
        if hour is None:
            return date(int(year), int(month), int(day))
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0))
    except ValueError as error:
        raise Hl7Error("AE", f"{where} is not a valid date: {value} ({error})", where, "102") from error
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return moment.replace(tzinfo=timezone(sign * delta))
    return moment.replace(tzinfo=zone)


def as_instant(value: datetime | date, zone: ZoneInfo) -> datetime:
    """A day becomes its local midnight; a datetime stays itself."""
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=zone)


def fhir_time(value: datetime | date) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value.isoformat()
