"""Errors with meaning. Each carries its HTTP status and the OperationOutcome issues that explain it;
`gateway.fhir.outcome` is the one place they become responses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, code (issue-type), diagnostics and FHIRPath expressions."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        issue: dict[str, object] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


@dataclass
class FhirError(Exception):
    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(issue.diagnostics for issue in self.issues) or f"HTTP {self.status}"


def _error(status: int, code: str, message: str, expression: tuple[str, ...] = ()) -> FhirError:
    return FhirError(status, [Issue("error", code, message, expression)])


def bad_request(message: str, *expression: str) -> FhirError:
    return _error(400, "invalid", message, expression)


def invalid_resource(issues: list[Issue]) -> FhirError:
    return FhirError(400, issues)


def unprocessable(message: str, *expression: str) -> FhirError:
    return _error(422, "processing", message, expression)


def forbidden(message: str) -> FhirError:
    return _error(403, "forbidden", message)


def not_found(message: str) -> FhirError:
    return _error(404, "not-found", message)


def gone(message: str) -> FhirError:
    return _error(410, "deleted", message)


def method_not_allowed(message: str) -> FhirError:
    return _error(405, "not-supported", message)


def not_acceptable(message: str) -> FhirError:
    return _error(406, "not-supported", message)


def conflict(message: str, *expression: str) -> FhirError:
    return _error(409, "conflict", message, expression)


def precondition_failed(message: str) -> FhirError:
    return _error(412, "conflict", message)


def too_large(message: str) -> FhirError:
    return _error(413, "too-costly", message)


def too_costly(message: str, *expression: str, status: int = 400) -> FhirError:
    """A request past one of the limits that bound its cost (docs/operations.md, "Limits")."""
    return _error(status, "too-costly", message, expression)


def unavailable(message: str, code: str = "too-costly") -> FhirError:
    return _error(503, code, message)


def unsupported_media_type(message: str) -> FhirError:
    return _error(415, "not-supported", message)


def unknown_reference(expression: str, reference: str) -> FhirError:
    """A reference in a write to a resource the writer may not read, or that does not exist: the same
    answer for both (docs/security.md)."""
    return _error(
        422, "not-found", f"{expression}: '{reference}' names no resource known here", (expression,)
    )


def duplicate_identity(expression: str) -> FhirError:
    """A patient identity held by a Patient the client may not read: the named exception of
    docs/security.md (409, no id, no content)."""
    return _error(
        409,
        "duplicate",
        "En patient med denna identitet finns redan i gatewayen men delas inte med er organisation. "
        "Kontakta den som vårdar patienten, eller regionen, för att få tillgång.",
        (expression,),
    )
