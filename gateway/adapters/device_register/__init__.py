"""Adapter: device_register."""
