"""Typed dependencies: settings, database session, the authenticated (and admin) user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from conveyor.settings import Settings
from serving import crud
from serving.core.ratelimit import Refusal
from serving.core.security import InvalidToken, credential_version, decode_access_token
from serving.db import User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="auth/token")
UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="invalid or expired token",
    headers={"WWW-Authenticate": "Bearer"},
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]
TokenDep = Annotated[str, Depends(oauth2_scheme)]


def too_many_requests(refusal: Refusal) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        detail=refusal.reason,
        headers={"Retry-After": str(refusal.retry_after_s)},
    )


def get_current_user(request: Request, session: SessionDep, token: TokenDep, settings: SettingsDep) -> User:
    """The token's user; 401 for a bad token or a changed password, 429 past the user's rate limit."""
    try:
        username, version = decode_access_token(token, settings.secret_key.get_secret_value())
    except InvalidToken:
        raise UNAUTHORIZED from None
    user = crud.get_user(session, username)
    if user is None or credential_version(user.password_hash) != version:
        raise UNAUTHORIZED
    # End the read: the pooled connection is free for the limiter now and while the route works.
    session.commit()
    request.state.username = user.username
    if refusal := request.app.state.limits.hit_request(user.username):
        raise too_many_requests(refusal)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="admin only")
    return user


AdminUser = Annotated[User, Depends(get_admin)]
