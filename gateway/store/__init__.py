"""Persistence: tables, the engine, migrations and the repository. Knows nothing of HTTP."""
