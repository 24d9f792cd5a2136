"""The ceiling: a bare FastAPI endpoint served the same way as the gateway (same uvicorn, workers)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

app = FastAPI()
BODY = b'{"resourceType":"Patient","id":"bare","name":[{"family":"Tolvansson"}]}'


@app.get("/fhir/Patient/{res_id}")
async def read(res_id: str) -> Response:
    return Response(BODY, media_type="application/fhir+json")
