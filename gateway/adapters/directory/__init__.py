"""The HSA catalogue extract (`gateway import directory FILE`): units' names, telecom, opening hours and
parents as Organization, Location and HealthcareService (docs/adapters/directory.md)."""
