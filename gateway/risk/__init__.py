"""High-risk identification (issue 19, finding 5): rules as data (mappings/risk/rules.yaml), evaluated
for a patient from what the gateway stores; the gateway proposes (a preliminary RiskAssessment and an
active Flag tagged `proposed`), a clinician confirms or dismisses (docs/risk.md)."""
