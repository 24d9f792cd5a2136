"""Adapters: source formats translated into FHIR Bundles that go through the common write path.

Each adapter registers itself in `registry.ADAPTERS` (name → Adapter) so that the quarantine can
replay its rejected inputs, and contributes its HTTP routes to `routes.router` under /adapters."""
