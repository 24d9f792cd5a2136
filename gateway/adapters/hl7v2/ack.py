"""HL7 v2.5 acknowledgements: MSA-1 AA / AE / AR, MSA-2 echoing MSH-10, an ERR segment on errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from itertools import count
from zoneinfo import ZoneInfo

_sequence = count(1)
_SEGMENT_FIELD = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)")


def escape(text: str) -> str:
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    out = out.replace("&", "\\T\\").replace("~", "\\R\\")
    return out.replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True)
class Ack:
    code: str  # AA, AE, AR
    control_id: str = ""
    text: str = ""
    location: str = ""
    hl7_error: str = "207"
    receiving_app: str = ""
    receiving_facility: str = ""
    trigger: str = ""

    def encode(self, zone: ZoneInfo) -> bytes:
        now = datetime.now(zone).strftime("%Y%m%d%H%M%S")
        control = f"ACK{now}{next(_sequence):06d}"
        msh = (
            f"MSH|^~\\&|GATEWAY|REGION|{escape(self.receiving_app)}|{escape(self.receiving_facility)}|{now}||"
            f"ACK^{escape(self.trigger)}^ACK|{control}|P|2.5|||||SWE|UNICODE UTF-8"
        )
        segments = [msh, f"MSA|{self.code}|{escape(self.control_id)}"]
        if self.code != "AA":
            location = ""
            match = _SEGMENT_FIELD.match(self.location)
            if match:
                location = f"{match.group(1)}^1^{match.group(2)}"
            names = {
                "100": "Segment sequence error",
                "101": "Required field missing",
                "102": "Data type error",
                "103": "Table value not found",
                "200": "Unsupported message type",
                "203": "Unsupported version id",
                "207": "Application internal error",
            }
            error = f"{self.hl7_error}^{names.get(self.hl7_error, 'Application error')}^HL70357"
            segments.append(f"ERR||{location}|{error}|E||||{escape(self.text)[:400]}")
        return ("\r".join(segments) + "\r").encode()


def read_ack(data: bytes) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, ERR-8) of an acknowledgement, for clients and tests."""
    code = control = text = ""
    for segment in re.split(r"[\r\n]+", data.decode("utf-8", "replace")):
        fields = segment.split("|")
        if fields[0] == "MSA":
            code = fields[1] if len(fields) > 1 else ""
            control = fields[2] if len(fields) > 2 else ""
        elif fields[0] == "ERR" and len(fields) > 8:
            text = fields[8]
    return code, control, text
