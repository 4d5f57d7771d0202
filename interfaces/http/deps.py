"""FastAPI dependencies: the services, the caller's address, the authenticated user."""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass, replace
from typing import Annotated
from uuid import UUID

from anyio import to_thread
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from application.read_models import UserRow
from application.values import Client
from infrastructure.callers import SessionCallers
from infrastructure.database import DatabaseProbe
from infrastructure.logs import note_user
from infrastructure.tokens import (
    AccessClaims,
    InvalidAccessTokenError,
    UnloadedKeyError,
)
from interfaces.bootstrap import Services
from interfaces.printable import printable

log = logging.getLogger(__name__)

MAX_USER_AGENT = 256

bearer_scheme = HTTPBearer(auto_error=False)


# The dependencies below that do no I/O are coroutines: FastAPI runs a plain
# function in a thread, and every hop to one costs more than the work.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_probe(request: Request) -> DatabaseProbe:
    probe: DatabaseProbe = request.app.state.probe
    return probe


ProbeDep = Annotated[DatabaseProbe, Depends(get_probe)]


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_ip(peer: str, forwarded_for: str | None, trusted: list[str]) -> str:
    """The caller's address: the socket peer, unless that peer is a trusted proxy.

    Behind trusted proxies, X-Forwarded-For is read from the right, skipping
    the trusted hops; the first untrusted address is the client. Entries to
    its left were written by the client itself and are never believed.
    """
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(address: str) -> bool:
        ip = _parse_ip(address)
        return ip is not None and any(ip in network for network in networks)

    if not forwarded_for or not is_trusted(peer):
        return peer
    for hop in reversed([hop.strip() for hop in forwarded_for.split(",")]):
        if not is_trusted(hop):
            return hop if _parse_ip(hop) else peer
    return peer


@functools.cache
def _warn_of_untrusted_forwarding() -> None:
    """Once per process: behind a proxy, every client would share one throttle."""
    log.warning(
        "requests carry X-Forwarded-For but AUTHLEDGER_TRUSTED_PROXIES is empty:"
        " if a proxy is in front, every client counts as the proxy's address"
    )


async def get_client(request: Request, services: ServicesDep) -> Client:
    """Who is calling: address (see client_ip) and a sanitised user agent."""
    peer = request.client.host if request.client else ""
    forwarded_for = request.headers.get("x-forwarded-for")
    if forwarded_for and not services.settings.trusted_proxies:
        _warn_of_untrusted_forwarding()
    ip = client_ip(peer, forwarded_for, services.settings.trusted_proxies)
    # Stored in the audit trail: nothing in it may forge a line or hide text.
    user_agent = printable(request.headers.get("user-agent", "")[: 4 * MAX_USER_AGENT])
    return Client(ip=ip, user_agent=user_agent[:MAX_USER_AGENT])


ClientDep = Annotated[Client, Depends(get_client)]


async def get_retrying_client(
    client: ClientDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=8,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Send the same one when retrying an unanswered request: "
            "it is answered with the session the first opened, never a second.",
        ),
    ] = None,
) -> Client:
    """The caller, with the key under which it may retry this request."""
    return replace(client, retry_key=idempotency_key or "")


RetryingClientDep = Annotated[Client, Depends(get_retrying_client)]


@dataclass(frozen=True)
class CurrentUser:
    user: UserRow
    session_id: UUID


async def _claims(request: Request, services: Services) -> AccessClaims:
    token = _bearer_token(request)
    try:
        claims = services.tokens.verify(token, look_up=False)
    except UnloadedKeyError:  # a key another replica rotated to: read the ring
        claims = await to_thread.run_sync(services.tokens.verify, token)
    note_user(claims.user_id)
    return claims


async def _authenticate(request: Request, claims: AccessClaims) -> CurrentUser:
    # A valid signature is not enough: the session must still be active, so a
    # logout takes effect at once rather than when the token expires.
    callers: SessionCallers = request.app.state.callers
    services: Services = request.app.state.services
    now = services.app.clock()
    user = await callers.find(claims.session_id, claims.user_id, now)
    if user is None:
        raise InvalidAccessTokenError
    return CurrentUser(user=user, session_id=claims.session_id)


@dataclass(frozen=True)
class SessionHolder:
    """A caller with a genuine access token; `current` None if its session is over."""

    claims: AccessClaims
    current: CurrentUser | None


async def get_session_holder(
    request: Request,
    services: ServicesDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> SessionHolder:
    """The caller of a logout: a retry of one that ended its session still
    holds a genuine token, and is told what the first try did."""
    claims = await _claims(request, services)
    try:
        return SessionHolder(claims, await _authenticate(request, claims))
    except InvalidAccessTokenError:
        return SessionHolder(claims, None)


SessionHolderDep = Annotated[SessionHolder, Depends(get_session_holder)]


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is None:
        raise InvalidAccessTokenError
    scheme, _space, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidAccessTokenError
    return token.strip()


async def get_current_user_optional(
    request: Request,
    services: ServicesDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> CurrentUser | None:
    """Return the caller, None if no token is sent; 401 if one is sent but invalid."""
    if request.headers.get("authorization") is None:
        return None
    return await _authenticate(request, await _claims(request, services))


async def get_current_user(
    user: Annotated[CurrentUser | None, Depends(get_current_user_optional)],
) -> CurrentUser:
    """Return the caller; 401 with a Bearer challenge if absent or invalid."""
    if user is None:
        raise InvalidAccessTokenError
    return user


CurrentUserDep = Annotated[CurrentUser, Depends(get_current_user)]
OptionalUserDep = Annotated[CurrentUser | None, Depends(get_current_user_optional)]
