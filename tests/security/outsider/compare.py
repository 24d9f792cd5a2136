"""What an outsider's answer may not hold, and whether two answers differ: the reusable checks of the
adversarial suite (their own tests: tests/security/outsider/test_compare.py).

`Answer` is one HTTP response as the checks see it: status, headers, the body (JSON when it is), and every
paging cursor in it decoded. `normalise` makes two answers comparable: the probe values (a hidden one and
a fresh one of the same shape) become placeholders, and generated ids and timestamps become fixed
tokens. `leaks` lists the secrets found anywhere in an answer, folded for case and accents like the
search index does, so a value that comes back lower-cased in a cursor is caught too."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import httpx

from gateway.search.text import fold

# Headers whose values can carry what the answer is about.
TELLING_HEADERS = ("location", "content-location", "etag", "last-modified", "link")
# Headers that differ between any two answers, whatever they are about.
VOLATILE_HEADERS = frozenset({"date", "content-length", "x-request-id", "server"})
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")
HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")
CURSOR_PARAM = "_cursor"
WORD = re.compile(r"[A-Za-z0-9]+")
# Where a probe word starts: not inside another word, but right after a %-escape (`%7Cstat` in a link).
_AFTER = r"(?:(?<=%[0-9A-Fa-f]{2})|(?<![A-Za-z0-9]))"


def decode_cursor(token: str) -> str:
    """A paging cursor as text: base64url of JSON in this gateway; anything else is returned as it is
    (an encrypted cursor decodes to bytes that hold no plain value, which the scan then sees)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        return token
    return raw.decode("utf-8", errors="replace")


def cursors(urls: Iterable[str]) -> list[str]:
    found = []
    for url in urls:
        for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            if name == CURSOR_PARAM:
                found.append(decode_cursor(value))
    return found


def links(body: Any) -> list[str]:
    """Every Bundle.link url in a body, also in Bundles nested in transaction/batch entries."""
    found: list[str] = []
    if isinstance(body, dict):
        for link in body.get("link", []) if isinstance(body.get("link"), list) else []:
            if isinstance(link, dict) and isinstance(link.get("url"), str):
                found.append(link["url"])
        for value in body.values():
            if isinstance(value, dict | list):
                found.extend(links(value))
    elif isinstance(body, list):
        for item in body:
            found.extend(links(item))
    return found


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str
    body: Any = None
    decoded_cursors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, response: httpx.Response) -> Answer:
        text = response.text
        try:
            body = response.json()
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in response.headers.items()}
        urls = links(body) + [headers[h] for h in ("location", "content-location") if h in headers]
        return cls(response.status_code, headers, text, body, cursors(urls))

    def everything(self) -> str:
        """All an outsider is given: the body, every header, and the decoded cursors."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return "\n".join([self.text, head, *self.decoded_cursors])


def leaks(answer: Answer, secrets: Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """The secrets found in the answer (folded for case and accents), apart from `allowed` (what the
    request itself named, which an answer may echo as it echoes an unknown value)."""
    shown_plain = answer.everything()
    for value in allowed:
        for form in _forms(value):
            shown_plain = shown_plain.replace(form, " ")
    shown = fold(shown_plain)
    found = []
    for secret in secrets:
        folded, *encoded = _searched(secret)
        if folded in shown or any(form in shown_plain for form in encoded):
            found.append(secret)
    return sorted(set(found))


@lru_cache(maxsize=65536)
def _searched(secret: str) -> tuple[str, ...]:
    """A secret folded, then its encoded forms that differ from it."""
    return (fold(secret), *_forms(secret)[1:])


@lru_cache(maxsize=65536)
def _forms(value: str) -> tuple[str, ...]:
    """A value as it can appear in an answer: itself, URL-encoded (links) and JSON-escaped."""
    forms = [value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1]]
    return tuple(dict.fromkeys(forms))


def normalise(answer: Answer, probes: Sequence[str]) -> dict[str, Any]:
    """What must be equal between the answer to a hidden probe and to a fresh one: the status, the header
    names, the telling headers' values and the body, with the probe values (`probes`, in order: the n-th
    becomes `<probe n>`), generated uuids and timestamps replaced."""

    def clean(text: str) -> str:
        # longest first, so a probe inside another one (an id inside a reference) is not cut apart
        order = sorted(range(len(probes)), key=lambda i: -len(probes[i]))
        for i in order:
            for form in _forms(probes[i]):
                if WORD.fullmatch(form):  # a code (`stat`) is replaced as a word, not inside `status`
                    text = re.sub(rf"{_AFTER}{form}(?![A-Za-z0-9])", f"<probe {i}>", text)
                elif form:
                    text = text.replace(form, f"<probe {i}>")
        text = UUID.sub("<uuid>", text)
        return HTTP_DATE.sub("<instant>", INSTANT.sub("<instant>", text))

    body: Any
    if answer.body is not None:
        body = json.loads(clean(json.dumps(answer.body, ensure_ascii=False, sort_keys=True)))
    else:
        body = clean(answer.text)
    headers = sorted(h for h in answer.headers if h not in VOLATILE_HEADERS)
    telling = {h: clean(answer.headers[h]) for h in TELLING_HEADERS if h in answer.headers}
    return {"status": answer.status, "headers": headers, "telling": telling, "body": body}


def differences(hidden: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Where two normalised answers differ, as short readable lines (empty when they are the same)."""
    found: list[str] = []
    _diff(hidden, fresh, "", found)
    return found[:12]


def _diff(a: Any, b: Any, path: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                found.append(f"{path}.{key}: {'missing' if key not in a else 'present'} for the hidden probe")
            else:
                _diff(a[key], b[key], f"{path}.{key}", found)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.append(f"{path}: {len(a)} items for the hidden probe, {len(b)} for the fresh one")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff(x, y, f"{path}[{i}]", found)
    elif a != b:
        found.append(f"{path}: {_short(a)} for the hidden probe, {_short(b)} for the fresh one")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "..."
