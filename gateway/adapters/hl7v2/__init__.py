"""Adapter: hl7v2."""
