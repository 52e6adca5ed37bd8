"""`python -m serving.users add|list|remove|set-password`: manage chat API users in the configured database.

Passwords are read from a prompt (or one line of stdin with `--password-stdin`), never from arguments.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from conveyor.settings import ConfigurationError, get_settings
from serving import crud
from serving.db import make_engine, make_sessionmaker


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    if password != getpass.getpass("again: "):
        raise crud.AccountError("the passwords differ")
    return password


def _add(session, args: argparse.Namespace) -> str:
    user = crud.create_user(session, args.username, _read_password(args.password_stdin), args.admin)
    return f"added {user.username}{' (admin)' if user.is_admin else ''}"


def _list(session, _: argparse.Namespace) -> str:
    return "\n".join(
        f"{u.username}\t{'admin' if u.is_admin else 'user'}\t{u.created_at:%Y-%m-%d %H:%M}"
        for u in crud.list_users(session)
    )


def _existing(session, username: str):
    user = crud.get_user(session, username)
    if user is None:
        raise crud.AccountError(f"no user {username!r}")
    return user


def _remove(session, args: argparse.Namespace) -> str:
    crud.delete_user(session, _existing(session, args.username))
    return f"removed {args.username} and their conversations"


def _set_password(session, args: argparse.Namespace) -> str:
    crud.set_password(session, _existing(session, args.username), _read_password(args.password_stdin))
    return f"password of {args.username} changed; their tokens no longer work"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.users", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--admin", action="store_true", help="may manage users")
    add.set_defaults(handler=_add)
    commands.add_parser("list", help="list users").set_defaults(handler=_list)
    remove = commands.add_parser("remove", help="delete a user and their conversations")
    remove.add_argument("username")
    remove.set_defaults(handler=_remove)
    password = commands.add_parser("set-password", help="change a user's password")
    password.add_argument("username")
    password.set_defaults(handler=_set_password)
    for sub in (add, password):
        sub.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    args = parser.parse_args(argv)
    try:
        engine = make_engine(get_settings().sql_url)
        with make_sessionmaker(engine)() as session:
            print(args.handler(session, args))
        engine.dispose()
    except (crud.AccountError, ConfigurationError) as exc:
        print(f"serving.users: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
