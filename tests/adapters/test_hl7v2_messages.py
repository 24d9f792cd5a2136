"""Builders of fictitious HL7 v2.5 ADT messages for the hl7v2 tests (no tests of its own)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.adapters.hl7v2.ack import read_ack

HOSPITAL = "Karolinska^SE2321000016-KS01^L"
KOMMUN = "SE2120001100-SOC1"
VC = "SE2321000016-VC01"
ZSV_FULL = f"ZSV|Y|0180^Stockholms stad^{KOMMUN}|{VC}||SE2321000016-N042^Sköterska^Siv|HEMTJANST~HJALPMEDEL|Y"
ZSV_NO_SIP = f"ZSV|Y|0180^Stockholms stad^{KOMMUN}|{VC}||SE2321000016-N042^Sköterska^Siv|HEMTJANST|N"


def adt(
    trigger: str,
    control: str,
    *,
    pnr: str = "191212121212",
    family: str = "Tolvansson",
    given: str = "Tolvan",
    visit: str = "V2026-778899",
    sent: str = "20261120081500",
    event: str | None = None,
    admitted: str = "20261120080000",
    discharged: str = "",
    zsv: str | None = ZSV_FULL,
    ready: str = "",
    charset: str = "UNICODE UTF-8",
    facility: str = HOSPITAL,
    structure: str | None = None,
    birth: str | None = None,
) -> bytes:
    structures = {"A01": "ADT_A01", "A03": "ADT_A03", "A08": "ADT_A01", "A11": "ADT_A09", "A13": "ADT_A01"}
    kind = f"ADT^{trigger}^{structure or structures.get(trigger, 'ADT_A01')}"
    pv1 = ["PV1", "1", "I", "LUNG^12^1^Karolinska", "", "", "", "SE2321000016-D001^Läkare^Lars"]
    pv1 += [""] * 11 + [visit] + [""] * 24 + [admitted, discharged]
    segments = [
        f"MSH|^~\\&|COSMIC|{facility}|GATEWAY|REGION|{sent}||{kind}|{control}|P|2.5|||||SWE|{charset}",
        f"EVN|{trigger}|{event or sent}",
        f"PID|1||{pnr}^^^&1.2.752.129.2.1.3.1&ISO^NNSWE||{family}^{given}||{birth or pnr[:8]}|M|||"
        "Storgatan 1^^Stockholm^^11122^SE^^^0180",
        f"PD1|||Vårdcentralen Centrum^^^^^&1.2.752.29.4.19&ISO^^^^{VC}",
        "|".join(pv1),
        "PV2|||||||||20261127",
    ]
    if zsv is not None:
        fields = zsv.split("|")
        if ready:
            while len(fields) < 5:
                fields.append("")
            fields[4] = ready
        segments.append("|".join(fields))
    text = "\r".join(segments) + "\r"
    return text.encode("latin-1" if charset == "8859/1" else "utf-8")


def post(client: TestClient, message: bytes) -> tuple[str, str, str]:
    response = client.post("/adapters/hl7v2", content=message, headers={"Content-Type": "application/hl7-v2"})
    assert response.status_code == 200, response.text
    return read_ack(response.content)
