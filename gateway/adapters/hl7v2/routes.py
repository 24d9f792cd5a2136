"""HTTP entrance of the hl7v2 adapter (mounted under /adapters by gateway.app)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
