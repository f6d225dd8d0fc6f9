"""/api/v1/secrets: a user's write-only environment variables. Values go in; only names and scopes come out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from flex.api import Secret, SecretList, SecretPut
from flex.api.environments import ENV_KEY_PATTERN
from flex.controlplane.errors import PROBLEM_RESPONSES
from flex.controlplane.routes.deps import Cp, User

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/secrets", tags=["secrets"], responses=PROBLEM_RESPONSES)

Name = Annotated[str, Path(pattern=ENV_KEY_PATTERN, max_length=255,
                           description="the environment variable the secret becomes, e.g. GITHUB_TOKEN")]


@router.put("/{name}", response_model=Secret, responses={201: {"model": Secret, "description": "created"}})
def put_secret(cp: Cp, who: User, name: Name, body: SecretPut) -> Response:
    """Create or replace a secret; the chosen environments get it as variable NAME when they next start."""
    secret, created = cp.secrets.put(who, name, body)
    return Response(secret.model_dump_json(by_alias=True), status_code=201 if created else 200,
                    media_type="application/json")


@router.get("", response_model=SecretList)
def list_secrets(cp: Cp, who: User) -> SecretList:
    """Your secrets: names and scopes, never values."""
    return SecretList(items=cp.secrets.list(who))


@router.delete("/{name}", status_code=204)
def delete_secret(cp: Cp, who: User, name: Name) -> Response:
    cp.secrets.delete(who, name)
    return Response(status_code=204)
