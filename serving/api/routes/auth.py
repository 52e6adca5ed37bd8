"""Login: OAuth2 password form in, short-lived bearer token out; attempts limited, repeated failures lock."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from serving import crud
from serving.api.deps import SessionDep, SettingsDep, too_many_requests
from serving.core.ratelimit import ApiLimits
from serving.core.security import create_access_token

router = APIRouter(prefix="/auth", tags=["auth"])


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post(
    "/token",
    responses={
        401: {"description": "wrong username or password"},
        429: {"description": "too many attempts from this address, or the account is locked (Retry-After)"},
    },
)
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> Token:
    """Exchange a username and password for a bearer token."""
    limits: ApiLimits = request.app.state.limits
    account = form.username if crud.USERNAME.match(form.username) else None  # else no account can match
    address = request.client.host if request.client else "unknown"
    if refusal := limits.start_login(account, address):
        raise too_many_requests(refusal)
    user = crud.authenticate(session, form.username, form.password) if account else None
    session.commit()  # ends the read: the limiter takes its own pooled connection
    if user is None:
        if account:
            limits.login_failed(account)
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="wrong username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    limits.login_succeeded(user.username)
    token = create_access_token(
        user.username, user.password_hash, settings.secret_key.get_secret_value(), settings.token_minutes
    )
    return Token(access_token=token, expires_in=settings.token_minutes * 60)
