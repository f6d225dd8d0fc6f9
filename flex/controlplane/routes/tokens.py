"""/api/v1/tokens: a user's own API tokens (the secret is shown once, at creation)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from flex.api import TokenCreate, TokenCreated, TokenList
from flex.controlplane.auth import create_token, delete_token, list_tokens
from flex.controlplane.errors import PROBLEM_RESPONSES
from flex.controlplane.routes.deps import Cp, User

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"], responses=PROBLEM_RESPONSES)


@router.post("", status_code=201, response_model=TokenCreated)
def create_token_route(cp: Cp, who: User, body: TokenCreate) -> TokenCreated:
    return create_token(cp.db, who, body)


@router.get("", response_model=TokenList)
def list_tokens_route(cp: Cp, who: User) -> TokenList:
    return TokenList(items=list_tokens(cp.db, who))


@router.delete("/{token_id}", status_code=204)
def delete_token_route(cp: Cp, who: User, token_id: str) -> Response:
    delete_token(cp.db, who, token_id)
    cp.credentials.clear()
    return Response(status_code=204)
