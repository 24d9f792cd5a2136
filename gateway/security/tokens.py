"""The authorization server (SMART Backend Services): client assertions in, access tokens out; and the
resource server's side: an access token (the gateway's own or the external issuer's) to a Principal.

Issuer and audience come from GATEWAY_BASE_URL (and GATEWAY_AUTH_ISSUER), never from a request's Host
header; only without a base URL (auth off, or GATEWAY_BASE_URL_FROM_REQUEST for local trials) do they
follow the request. Nothing keys on a token's string: the replay check keys on the assertion's `jti`, the
verified-token cache on the access token's `jti` (gateway.security.signatures)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hmac import compare_digest
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from gateway.config import Settings
from gateway.hooks import Principal
from gateway.security import purpose, store
from gateway.security.jwts import CLIENT_ALGORITHMS, LEEWAY, Unreadable, audiences, number, peek
from gateway.security.keys import KeyRing
from gateway.security.oidc import ExternalIssuer, Rejected
from gateway.security.revocation import ClientStatuses
from gateway.security.scopes import grant, split
from gateway.security.sealing import Sealer
from gateway.security.signatures import is_high_s, low_s

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future
VERIFIED_CACHE_SIZE = 10_000  # verified access tokens remembered per process
ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068: only tokens made as access tokens are taken as access tokens
PURPOSE_CLAIM = "purpose_of_use"  # in the gateway's own tokens: the client's configured purpose of use


@dataclass(frozen=True)
class Urls:
    """Where this gateway is: as configured (GATEWAY_BASE_URL); as the request sees it only when no base
    URL is configured, which start-up allows only with auth off or GATEWAY_BASE_URL_FROM_REQUEST."""

    fhir_base: str
    token_endpoint: str
    jwks_uri: str
    issuer: str

    @classmethod
    def of(cls, settings: Settings, request_origin: str) -> Urls:
        """The configured base URL's; `request_origin` is used only when none is configured."""
        base = settings.base_url or request_origin.rstrip("/") + "/fhir"
        origin = base.removesuffix("/fhir")
        return cls(
            base, f"{origin}/auth/token", f"{origin}/auth/jwks", settings.auth_issuer or f"{origin}/auth"
        )


@dataclass(frozen=True)
class Verified:
    """An access token of the gateway's own, verified against these URLs, and the principal it gave."""

    token: str
    issuer: str
    fhir_base: str
    principal: Principal
    exp: float

    def same(self, token: str, urls: Urls) -> bool:
        return (
            compare_digest(self.token.encode(), token.encode())
            and self.issuer == urls.issuer
            and self.fhir_base == urls.fhir_base
        )


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


class Authority:
    def __init__(self, settings: Settings, engine: Engine, external: ExternalIssuer | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.ring = KeyRing(engine, Sealer.of(settings), settings.signing_alg, settings.token_lifetime)
        self.external = external or (ExternalIssuer(settings) if settings.oidc_issuer else None)
        self.purposes = purpose.client_defaults(settings.client_purposes)
        self.statuses = ClientStatuses(engine, settings.client_status_seconds)
        self._verified: dict[str, Verified] = {}  # by jti

    # -- the token endpoint ---------------------------------------------------------------------------

    def token(self, form: Mapping[str, str], urls: Urls) -> dict[str, Any]:
        """POST /auth/token with client_credentials and a private_key_jwt assertion (blocking: database)."""
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "Only grant_type=client_credentials is supported")
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            raise OAuthError(
                "invalid_request", f"A client_assertion of client_assertion_type {ASSERTION_TYPE} is required"
            )
        requested = split(form.get("scope"))
        if not requested:
            raise OAuthError("invalid_request", "The scope parameter is required")
        client = self._authenticate(form["client_assertion"], urls)
        granted = grant(requested, client.scopes)
        if not granted:
            raise OAuthError("invalid_scope", "None of the requested scopes is registered for this client")
        access_token = self._issue(client, granted, urls)
        return {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": self.settings.token_lifetime,
            "scope": " ".join(granted),
        }

    def _authenticate(self, assertion: str, urls: Urls) -> store.Client:
        """The client whose registered key signed this assertion, with every SMART check passed."""
        try:
            _header, unverified = peek(assertion)
        except Unreadable as error:
            raise _invalid_client(str(error)) from error
        client_id = unverified.get("iss")
        client = store.get_client(self.engine, client_id) if isinstance(client_id, str) else None
        if client is None or not client.active:
            raise _invalid_client("The assertion's issuer is not a registered client")
        try:
            keys = KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
            claims = jwt.decode(assertion, keys, algorithms=CLIENT_ALGORITHMS).claims
        except (JoseError, ValueError) as error:
            raise _invalid_client(
                "The assertion is not signed by a registered key with RS384 or ES384"
            ) from error
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise _invalid_client("The assertion's iss and sub must both be the client_id")
        if urls.token_endpoint not in audiences(claims):
            raise _invalid_client(f"The assertion's aud must be the token endpoint {urls.token_endpoint}")
        now, exp = time.time(), number(claims, "exp")
        if exp is None:
            raise _invalid_client("The assertion has no exp")
        if exp < now - LEEWAY:
            raise _invalid_client("The assertion has expired")
        if exp > now + MAX_ASSERTION_LIFETIME + LEEWAY:
            raise _invalid_client("The assertion's exp is more than five minutes ahead")
        nbf = number(claims, "nbf")
        if nbf is not None and nbf > now + LEEWAY:
            raise _invalid_client("The assertion is not valid yet (nbf)")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 255:
            raise _invalid_client("The assertion needs a jti (at most 255 characters)")
        remember_until = datetime.fromtimestamp(exp + LEEWAY, UTC).replace(tzinfo=None)
        if not store.remember_jti(self.engine, client.client_id, jti, remember_until):
            raise _invalid_client("The assertion's jti was used before (replay)")
        return client

    def _issue(self, client: store.Client, scopes: list[str], urls: Urls) -> str:
        key, alg = self.ring.signer()
        now = int(time.time())
        claims = {
            "iss": urls.issuer,
            "sub": client.client_id,
            "aud": urls.fhir_base,
            "iat": now,
            "exp": now + self.settings.token_lifetime,
            "jti": uuid.uuid4().hex,
            "client_id": client.client_id,
            "organization": client.organization,
            "scope": " ".join(scopes),
            PURPOSE_CLAIM: self.purposes.get(client.client_id, purpose.DEFAULT),
        }
        header = {"alg": alg, "kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        signed = jwt.encode(header, claims, key, algorithms=CLIENT_ALGORITHMS)
        return low_s(signed) if alg == "ES384" else signed

    # -- access tokens on every request -----------------------------------------------------------------

    async def principal(self, token: str, urls: Urls) -> Principal:
        """Who the bearer of `token` is; Rejected when the token is not acceptable, for any reason,
        ClientRefused (a Rejected) when it is but the client it names is disabled or removed."""
        try:
            header, unverified = peek(token)
        except Unreadable as error:
            raise Rejected(str(error)) from error
        if self.external is not None and unverified.get("iss") == self.external.issuer:
            principal = await self.external.principal(token, header)
            await self.statuses.check(principal, issued_here=False)
            return principal
        principal = await self._own(token, header, unverified.get("jti"), urls)
        await self.statuses.check(principal, issued_here=True)
        return principal

    async def _own(self, token: str, header: dict[str, Any], jti: Any, urls: Urls) -> Principal:
        """The principal of an access token of the gateway's own. One verified is remembered by its `jti`
        until it expires (checking an ES384 signature on every request cost more than the request
        itself); the same `jti` in any other string is verified afresh."""
        known = self._verified.get(jti) if isinstance(jti, str) else None
        if known is not None and known.same(token, urls) and known.exp >= time.time() - LEEWAY:
            return known.principal
        principal, exp, verified_jti = await self._verify(token, header, urls)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[verified_jti] = Verified(token, urls.issuer, urls.fhir_base, principal, exp)
        return principal

    async def _verify(self, token: str, header: dict[str, Any], urls: Urls) -> tuple[Principal, float, str]:
        """Verify an access token of the gateway's own fully; its principal, expiry and jti."""
        if header.get("alg") not in CLIENT_ALGORITHMS:
            raise Rejected("The token's algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Rejected("The token has no key id")
        if header.get("alg") == "ES384" and is_high_s(token):
            raise Rejected("The token's signature is not in the form this gateway issues (high s)")
        keys = (
            await run_in_threadpool(self.ring.verifier, kid)
            if self.ring.stale(kid)
            else self.ring.verifier(kid)
        )
        try:
            verified = jwt.decode(token, keys, algorithms=CLIENT_ALGORITHMS)
        except JoseError as error:
            raise Rejected(f"The token's signature does not verify ({error.error})") from error
        claims = verified.claims
        if verified.header.get("typ") != ACCESS_TOKEN_TYPE:
            raise Rejected("The token is not an access token")
        if claims.get("iss") != urls.issuer:
            raise Rejected("The token's issuer is not this gateway")
        if urls.fhir_base not in audiences(claims):
            raise Rejected("The token is not meant for this FHIR base (aud)")
        exp = number(claims, "exp")
        if exp is None or exp < time.time() - LEEWAY:
            raise Rejected("The token has expired")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise Rejected("The token has no jti")
        client_id, organization = claims.get("client_id"), claims.get("organization")
        if not isinstance(client_id, str):
            raise Rejected("The token names no client")
        stated = claims.get(PURPOSE_CLAIM)
        principal = Principal(
            client_id=client_id,
            organization=organization if isinstance(organization, str) else None,
            scopes=frozenset(split(claims.get("scope") if isinstance(claims.get("scope"), str) else "")),
            purpose=stated if isinstance(stated, str) and stated in purpose.CODES else purpose.DEFAULT,
        )
        return principal, exp, jti
