"""FHIR REST: one module per interaction, named as the specification names it."""
