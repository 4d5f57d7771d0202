"""What resource servers fetch to verify access tokens: the JWKS, and discovery."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from interfaces.http.deps import ServicesDep

router = APIRouter(tags=["keys"])

JWKS_PATH = "/.well-known/jwks.json"


@router.get(JWKS_PATH)
def jwks(services: ServicesDep) -> JSONResponse:
    """The public keys that verify access tokens: the next, the active and
    the retired ones. Cached for less than a next key is published before
    it signs, so a verifier that refreshes on time has every signing key."""
    max_age = services.settings.jwks_max_age_s()
    return JSONResponse(
        {"keys": services.tokens.keys.published()},
        headers={"Cache-Control": f"public, max-age={max_age}"},
    )


@router.get("/.well-known/openid-configuration")
def discovery(services: ServicesDep) -> dict[str, str]:
    """The tokens' issuer and where its keys are: nothing more is true here
    (no OAuth endpoints, no ID tokens, no userinfo)."""
    settings = services.settings
    return {
        "issuer": settings.jwt_issuer,
        "jwks_uri": settings.public_url.rstrip("/") + JWKS_PATH,
    }
