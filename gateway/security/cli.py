"""`gateway clients add|list|sources|disable|enable|remove|demo`, `gateway keys rotate` and
`gateway demo-token`."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from joserfc import jwt
from joserfc.errors import JoseError
from rich.console import Console
from sqlalchemy import Engine

from gateway.config import Settings
from gateway.security import keys, sources, store
from gateway.security.jwts import CLIENT_ALGORITHMS
from gateway.security.scopes import GATEWAY_SCOPES, is_known, split
from gateway.security.sealing import Sealer
from gateway.security.tokens import ASSERTION_TYPE
from gateway.store.database import make_engine
from gateway.subscriptions.registration import notify_rows

clients_app = typer.Typer(help="Registered system clients (SMART Backend Services).", no_args_is_help=True)
keys_app = typer.Typer(help="The gateway's token signing keys.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)

DEMO_CLIENT_ID = "demo-client"
DEMO_ORGANIZATION = "SE0000000000-DEMO"  # a fictitious HSA-id
DEMO_SCOPES = ["system/*.cruds", *GATEWAY_SCOPES]


def _engine() -> tuple[Settings, Engine]:
    settings = Settings.from_env()
    return settings, make_engine(settings.database_url, settings.database_schema)


def public_jwks(document: Any) -> dict[str, Any]:
    """The public part of a JWKS (or of one JWK) of RSA and EC keys; ValueError for anything else."""
    listed = document.get("keys") if isinstance(document, dict) and "keys" in document else [document]
    if not isinstance(listed, list) or not listed:
        raise ValueError("a JWKS needs at least one key")
    public = []
    for data in listed:
        if not isinstance(data, dict):
            raise ValueError("every key of the JWKS must be a JSON object")
        try:
            key = keys.import_jwk(data)
        except (JoseError, ValueError, TypeError) as error:
            raise ValueError(f"unusable key {data.get('kid', '')}: {error}") from error
        entry = key.as_dict(private=False)
        entry["kid"] = data.get("kid") or key.thumbprint()
        if "alg" in data:
            entry["alg"] = data["alg"]
        public.append(entry)
    return {"keys": public}


def _scopes(text: str) -> list[str]:
    scopes = split(text)
    unknown = [scope for scope in scopes if not is_known(scope)]
    if unknown or not scopes:
        console.print(f"[red]unknown or malformed scopes: {' '.join(unknown) or '(none given)'}[/red]")
        raise typer.Exit(2)
    return scopes


def _sources(texts: list[str], option: str = "--source") -> list[str]:
    """`KIND:ID` sources in their canonical form; a usage error (exit 2) for any other text."""
    try:
        return [sources.parse(text) for text in texts]
    except sources.SourceError as error:
        raise typer.BadParameter(str(error), param_hint=option) from error


SOURCE_HELP = (
    "A source whose records it may send to an adapter entrance (repeatable): "
    "bestallningsportalen:PORTAL-ID, device-register:REGISTER@OWNER-HSA-ID, hl7v2:MSH-4-HSA-ID."
)


ENDPOINT_HELP = (
    "A URL prefix its subscriptions may deliver to (repeatable), https://…/; normalized, and matched at a "
    "path boundary."
)
NETWORK_HELP = "A private network (CIDR) its endpoints may resolve to (repeatable), e.g. 10.12.0.0/16."
CA_HELP = "A CA bundle (PEM) its endpoints' certificates are checked against, instead of the system's."
CERT_HELP = "A client certificate and key (one PEM file) presented to its endpoints (mutual TLS)."


@clients_app.command("add")
def add(
    name: Annotated[str, typer.Option(help="A name people recognise.")],
    org: Annotated[str, typer.Option(help="HSA-id of the organisation the client acts for.")],
    jwks: Annotated[Path, typer.Option(help="File with the client's public keys (a JWKS, RS384/ES384).")],
    scopes: Annotated[str, typer.Option(help='Scopes it may be granted, e.g. "system/Task.cruds".')],
    source: Annotated[list[str] | None, typer.Option("--source", help=SOURCE_HELP)] = None,
    notify_endpoint: Annotated[
        list[str] | None, typer.Option("--notify-endpoint", help=ENDPOINT_HELP)
    ] = None,
    notify_network: Annotated[list[str] | None, typer.Option("--notify-network", help=NETWORK_HELP)] = None,
    notify_ca: Annotated[Path | None, typer.Option("--notify-ca", help=CA_HELP)] = None,
    notify_client_cert: Annotated[Path | None, typer.Option("--notify-client-cert", help=CERT_HELP)] = None,
) -> None:
    """Register a client; prints `client_id: <id>`."""
    bound = _sources(source or [])
    try:
        notify = notify_rows(notify_endpoint or [], notify_network or [], notify_ca, notify_client_cert)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--notify-…") from error
    try:
        document = public_jwks(json.loads(jwks.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        console.print(f"[red]{jwks}: {error}[/red]")
        raise typer.Exit(2) from error
    granted = _scopes(scopes)
    _settings, engine = _engine()
    try:
        client = store.add_client(engine, name, org, document, granted, sources=bound, notify=notify)
    finally:
        engine.dispose()
    print(f"client_id: {client.client_id}")


@clients_app.command("sources")
def sources_(
    client_id: Annotated[str, typer.Argument(help="The registered client.")],
    add: Annotated[
        list[str] | None, typer.Option("--add", help="Bind it to this source (repeatable).")
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="Unbind it from this source (repeatable).")
    ] = None,
) -> None:
    """Show, bind or unbind the sources a client may send records of; prints its sources, one a line."""
    added, removed = _sources(add or [], "--add"), _sources(remove or [], "--remove")
    _settings, engine = _engine()
    try:
        if store.get_client(engine, client_id) is None:
            console.print(f"[red]no registered client {client_id!r}[/red]")
            raise typer.Exit(2)
        sources.unbind(engine, client_id, removed)
        sources.bind(engine, client_id, added)
        bound = sorted(sources.of_client(engine, client_id))
    finally:
        engine.dispose()
    for item in bound:
        print(item)


@clients_app.command("list")
def list_() -> None:
    """The registered clients, oldest first (id, name, organisation, scopes, key ids, bound sources);
    then the disabled client ids of the external issuer."""
    _settings, engine = _engine()
    try:
        found = store.list_clients(engine)
        bound = sources.of_clients(engine)
        disabled = store.disabled_external(engine)
    finally:
        engine.dispose()
    for client in found:
        state = "" if client.active else " (disabled)"
        kids = ",".join(str(key.get("kid")) for key in client.jwks.get("keys", []))
        fields = (client.client_id, client.name, client.organization, " ".join(client.scopes), f"keys={kids}")
        print("\t".join([*fields, "sources=" + ",".join(bound.get(client.client_id, []))]) + state)
    for client_id, since in disabled:
        print(f"{client_id}\t(external client id, disabled since {since:%Y-%m-%d %H:%M:%S} UTC)")


ClientId = Annotated[str, typer.Argument(help="The client id (`gateway clients list`).")]


@clients_app.command("disable")
def disable(client_id: ClientId) -> None:
    """Refuse the client's tokens from now on (each gateway process within GATEWAY_CLIENT_STATUS_SECONDS)
    and its new assertions at once. An id not registered here is taken as the external issuer's client:
    it goes on the list of disabled client ids."""
    _settings, engine = _engine()
    try:
        if store.set_client_active(engine, client_id, False):
            console.print(f"client '{client_id}' is disabled")
        elif store.disable_external(engine, client_id):
            console.print(
                f"'{client_id}' is not a registered client: disabled as an external issuer's client id"
            )
        else:
            console.print(f"external client id '{client_id}' was disabled already")
    finally:
        engine.dispose()


@clients_app.command("enable")
def enable(client_id: ClientId) -> None:
    """Honour a disabled client's tokens again (or take an external client id off the disabled list)."""
    _settings, engine = _engine()
    try:
        registered = store.set_client_active(engine, client_id, True)
        listed = store.enable_external(engine, client_id)
    finally:
        engine.dispose()
    if not registered and not listed:
        console.print(f"[red]'{client_id}' is neither a registered client nor a disabled client id[/red]")
        raise typer.Exit(1)
    console.print(f"client '{client_id}' is enabled")


@clients_app.command("remove")
def remove(client_id: ClientId) -> None:
    """Delete a registered client: its keys and scopes are forgotten and its tokens refused (each gateway
    process within GATEWAY_CLIENT_STATUS_SECONDS). Its records and audit trail stay."""
    _settings, engine = _engine()
    try:
        removed = store.remove_client(engine, client_id)
    finally:
        engine.dispose()
    if not removed:
        console.print(f"[red]'{client_id}' is not a registered client[/red]")
        raise typer.Exit(1)
    console.print(f"client '{client_id}' is removed")


@keys_app.command("rotate")
def rotate(
    alg: Annotated[str, typer.Option(help="ES384 or RS384; default GATEWAY_SIGNING_ALG.")] = "",
) -> None:
    """Start signing with a new key; the old ones stay in /auth/jwks until their tokens have expired."""
    settings, engine = _engine()
    chosen = alg or settings.signing_alg
    if chosen not in keys.ALGORITHMS:
        console.print(f"[red]--alg must be one of {', '.join(keys.ALGORITHMS)}[/red]")
        raise typer.Exit(2)
    try:
        kid = keys.rotate(engine, Sealer.of(settings), chosen, settings.token_lifetime)
    finally:
        engine.dispose()
    print(f"kid: {kid}")


def seed_demo(engine: Engine, key_path: Path) -> store.Client:
    """The demo client, its private key kept at `key_path`; made once, brought up to date after."""
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True)
        key = keys.generate("ES384")
        key_path.write_text(json.dumps(key.as_dict(private=True)), encoding="utf-8")
        key_path.chmod(0o600)
    private = json.loads(key_path.read_text(encoding="utf-8"))
    document = public_jwks(private)
    if store.get_client(engine, DEMO_CLIENT_ID) is None:
        return store.add_client(
            engine, "Demo client (make run)", DEMO_ORGANIZATION, document, DEMO_SCOPES, DEMO_CLIENT_ID
        )
    store.update_client(engine, DEMO_CLIENT_ID, document, DEMO_SCOPES)
    found = store.get_client(engine, DEMO_CLIENT_ID)
    assert found is not None
    return found


@clients_app.command("demo")
def demo(
    url: Annotated[str, typer.Option(help="Where the gateway will listen.")] = "http://127.0.0.1:8080",
) -> None:
    """Register the demo client (idempotent) and print a command that gets a token and calls the API."""
    settings, engine = _engine()
    try:
        client = seed_demo(engine, settings.demo_key())
    finally:
        engine.dispose()
    console.print(f"demo client '{client.client_id}' is registered; its private key is {settings.demo_key()}")
    console.print("Once the server is up, try from another terminal:")
    console.print(
        f'  TOKEN=$(.venv/bin/gateway demo-token --url {url}) && curl -s -H "Authorization: Bearer $TOKEN" '
        f"{url}/fhir/Patient"
    )


def assertion(client_id: str, private_jwk: dict[str, Any], token_endpoint: str, lifetime: int = 240) -> str:
    """A client assertion (private_key_jwt) as SMART Backend Services clients make them."""
    key = keys.import_jwk(private_jwk)
    alg = str(private_jwk.get("alg") or ("ES384" if private_jwk.get("kty") == "EC" else "RS384"))
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    header = {"alg": alg, "kid": private_jwk.get("kid") or key.thumbprint(), "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=CLIENT_ALGORITHMS)


def demo_token(
    url: Annotated[str, typer.Option(help="The gateway's address.")] = "http://127.0.0.1:8080",
    scope: Annotated[str, typer.Option(help="Scopes to ask for.")] = "system/*.cruds",
    key: Annotated[
        Path | None,
        typer.Option(
            help="The demo client's private key (default: demo-client.jwk.json in GATEWAY_DATA_DIR)."
        ),
    ] = None,
) -> None:
    """Get an access token for the demo client from a running gateway, the SMART way; print it."""
    key = key or Settings.from_env().demo_key()
    try:
        private = json.loads(key.read_text(encoding="utf-8"))
    except OSError as error:
        console.print(f"[red]{key}: {error}; run `gateway clients demo` (make run does) first[/red]")
        raise typer.Exit(2) from error
    try:
        discovery = httpx.get(f"{url.rstrip('/')}/fhir/.well-known/smart-configuration", timeout=10.0)
        discovery.raise_for_status()
        token_endpoint = str(discovery.json()["token_endpoint"])
        form = {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(DEMO_CLIENT_ID, private, token_endpoint),
        }
        response = httpx.post(token_endpoint, data=form, timeout=10.0)
    except (httpx.HTTPError, KeyError, ValueError) as error:
        console.print(f"[red]cannot get a token from {url}: {error}[/red]")
        raise typer.Exit(1) from error
    if response.status_code != 200:
        console.print(f"[red]token refused ({response.status_code}): {response.text}[/red]")
        raise typer.Exit(1)
    print(response.json()["access_token"])
