"""The ceiling: a bare FastAPI app served the same way as the gateway (same uvicorn, workers), answering
each benchmark scenario's request (read, search, create) with a fixed body: what FastAPI and uvicorn
cost on this machine before the gateway does any work."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI()
BODY = b'{"resourceType":"Patient","id":"bare","name":[{"family":"Tolvansson"}]}'
PAGE = b'{"resourceType":"Bundle","type":"searchset","entry":[{"resource":' + BODY + b"}]}"
FHIR = "application/fhir+json"


@app.get("/fhir/Patient/{res_id}")
async def read(res_id: str) -> Response:
    return Response(BODY, media_type=FHIR)


@app.get("/fhir/{res_type}")
async def search(res_type: str) -> Response:
    return Response(PAGE, media_type=FHIR)


@app.post("/fhir/{res_type}")
async def create(res_type: str, request: Request) -> Response:
    await request.body()
    return Response(BODY, status_code=201, media_type=FHIR)
