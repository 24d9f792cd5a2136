"""Resource parsing and the write-time checks fhir.resources does not make."""
