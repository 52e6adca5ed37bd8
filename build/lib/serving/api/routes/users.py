"""User management: admins add, list and remove users; everyone can read themselves and change a password."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field

from serving import crud
from serving.api.deps import AdminUser, CurrentUser, SessionDep
from serving.db import User

router = APIRouter(prefix="/users", tags=["users"])


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    username: str
    is_admin: bool
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(pattern=crud.USERNAME.pattern)
    password: str = Field(min_length=crud.MIN_PASSWORD, max_length=256)
    is_admin: bool = False


class PasswordChange(BaseModel):
    password: str = Field(min_length=crud.MIN_PASSWORD, max_length=256)


def _find(session, username: str) -> User:
    user = crud.get_user(session, username)
    if user is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no user {username!r}")
    return user


@router.get("/me")
def read_me(user: CurrentUser) -> UserOut:
    """The signed-in user."""
    return UserOut.model_validate(user)


@router.get("")
def list_users(_: AdminUser, session: SessionDep) -> list[UserOut]:
    """All users (admin)."""
    return [UserOut.model_validate(u) for u in crud.list_users(session)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, _: AdminUser, session: SessionDep) -> UserOut:
    """Add a user (admin)."""
    try:
        user = crud.create_user(session, body.username, body.password, body.is_admin)
    except crud.AccountError as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return UserOut.model_validate(user)


@router.delete("/{username}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(username: str, admin: AdminUser, session: SessionDep) -> Response:
    """Remove a user and their conversations (admin; not yourself)."""
    if username == admin.username:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail="you cannot remove yourself")
    crud.delete_user(session, _find(session, username))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{username}/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(username: str, body: PasswordChange, user: CurrentUser, session: SessionDep) -> Response:
    """Set a password (your own, or anyone's as admin); existing tokens of that user stop working."""
    if username != user.username and not user.is_admin:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="admin only")
    crud.set_password(session, _find(session, username), body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
