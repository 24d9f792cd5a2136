"""HTTP entrance of the device_register adapter (mounted under /adapters by gateway.app)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
