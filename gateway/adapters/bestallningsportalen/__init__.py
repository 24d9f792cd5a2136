"""Adapter: Beställningsportalen order exports → DeviceRequest, Task, Provenance.

See docs/adapters/bestallningsportalen.md."""
