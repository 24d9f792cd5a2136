"""Adapter: bestallningsportalen."""
