"""Bulk Data $export: parameters, jobs and their output in the database, the worker (docs/fhir/export.md)."""
