"""The Device a register row describes, laid over what the gateway stores of the unit: the fields the
register owns (MANAGED) and its maintenance data (the `device-maintenance` extension) replaced, what other
sources added kept. Pure."""

from __future__ import annotations

from gateway.adapters import mapping as m
from gateway.adapters.device_register.lifetime import MAINTENANCE_EXT, lifetime_end
from gateway.model.types import Json

SOURCE = "device-register"
UCUM = "http://unitsofmeasure.org"
MISSING_TAG = {"system": m.TAGS, "code": "missing-from-register", "display": "Missing from the register"}
MANAGED = (
    "identifier",
    "status",
    "statusReason",
    "serialNumber",
    "deviceName",
    "modelNumber",
    "manufacturer",
    "type",
    "owner",
    "patient",
)


def status_of(row: Json) -> Json:
    found: Json = m.code_map(SOURCE, "register_status")[row["status"]]
    return found


def unit_key(row: Json) -> tuple[str, str]:
    """(identifier system, individnummer) of the row's unit."""
    return m.unit_system(row["register"]), row["individnummer"]


def content(resource: Json) -> Json:
    """What a resource says, without the server's bookkeeping (versionId, lastUpdated)."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    clean = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        clean["meta"] = meta
    return clean


def _maintenance(row: Json) -> list[Json]:
    parts: list[Json] = []
    if row.get("serviceintervall_manader") is not None:
        months = row["serviceintervall_manader"]
        duration = {"value": months, "unit": "months", "system": UCUM, "code": "mo"}
        parts.append({"url": "serviceInterval", "valueDuration": duration})
    for column, name in (("senaste_service", "lastService"), ("nasta_service", "nextService")):
        if row.get(column):
            parts.append({"url": name, "valueDate": row[column]})
    if row.get("livslangd_ar") is not None:
        years = {"value": row["livslangd_ar"], "unit": "years", "system": UCUM, "code": "a"}
        parts.append({"url": "lifetime", "valueDuration": years})
    if row.get("inkopsdatum"):
        parts.append({"url": "purchaseDate", "valueDate": row["inkopsdatum"]})
        end = lifetime_end(row["inkopsdatum"], row.get("livslangd_ar"))
        if end is not None:  # searchable as Device?lifetime-end= (issue 18)
            parts.append({"url": "lifetimeEnd", "valueDate": end})
    if row.get("batteribackup"):
        value = bool(m.code_map(SOURCE, "ja_nej")[row["batteribackup"]]["value"])
        parts.append({"url": "batteryBackup", "valueBoolean": value})
    system = m.unit_system(row["register"])
    for other in str(row.get("kopplad_till") or "").split():
        unit = {"identifier": {"system": system, "value": other}, "display": f"{row['register']} {other}"}
        parts.append({"url": "linkedUnit", "valueReference": unit})
    if row.get("leverantor_service"):
        parts.append({"url": "serviceSupplier", "valueString": row["leverantor_service"]})
    return [{"url": MAINTENANCE_EXT, "extension": parts}] if parts else []


def device_resource(row: Json, owner: str, patient: str | None, stored: Json | None) -> Json:
    """The Device as the register says it is, laid over what is stored (fields of other sources kept)."""
    system, value = unit_key(row)
    status = status_of(row)
    code: Json = {"coding": [], "text": row["benamning"]}
    if row.get("iso9999"):
        code["coding"].append({"system": m.ISO9999, "code": row["iso9999"]})
    code["coding"].append({"system": m.ARTICLE, "code": row["artikelnummer"], "display": row["benamning"]})
    reason = {"system": m.REGISTER_STATUS, "code": status["code"], "display": row["status"]}
    built: Json = {
        "resourceType": "Device",
        "identifier": [{"system": system, "value": value}],
        "status": status["device"],
        "statusReason": [{"coding": [reason], "text": row["status"]}],
        "deviceName": [{"name": row["benamning"], "type": "user-friendly-name"}],
        "type": code,
        "owner": m.ref(owner),
    }
    for column, element in (("serienummer", "serialNumber"), ("modell", "modelNumber")):
        if row.get(column):
            built[element] = row[column]
    if row.get("tillverkare"):
        built["manufacturer"] = row["tillverkare"]
    if patient:
        built["patient"] = m.ref(patient)
    if stored is None:
        extensions = _maintenance(row)
        return {**built, **({"extension": extensions} if extensions else {})}
    # Top-level keys replaced, nothing changed in place: the stored unit's own values can be shared.
    result = {k: v for k, v in stored.items() if k not in MANAGED and k != "extension"}
    result.update({k: v for k, v in built.items() if k != "identifier"})
    held = stored.get("identifier", [])
    have = {(i.get("system"), i.get("value")) for i in held}
    result["identifier"] = [*held, *(i for i in built["identifier"] if (i["system"], i["value"]) not in have)]
    others = [e for e in stored.get("extension", []) if e.get("url") != MAINTENANCE_EXT]
    extensions = [*others, *_maintenance(row)]
    if extensions:
        result["extension"] = extensions
    meta = content(stored).get("meta")
    if meta:
        tags = [t for t in meta.get("tag", []) if not is_missing(t)]
        meta = {k: v for k, v in meta.items() if k != "tag"}
        if tags:
            meta["tag"] = tags
        if meta:
            result["meta"] = meta
        else:
            result.pop("meta", None)
    result["id"] = stored["id"]
    return result


def is_missing(tag: Json) -> bool:
    return tag.get("system") == MISSING_TAG["system"] and tag.get("code") == MISSING_TAG["code"]
