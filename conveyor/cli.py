"""`conveyor` command: check configuration, start/stop the local stack, manage API users."""

from __future__ import annotations

import argparse
import sys

from conveyor import runtime
from conveyor.settings import ConfigurationError, get_settings


def _check(_: argparse.Namespace) -> None:
    from conveyor import tracking

    settings = get_settings()
    print(f"state folder      {settings.state_dir}")
    print(f"MLflow tracking   {tracking.check_reachable()}")
    print(f"LanceDB           {settings.knowledge_uri}")
    print(f"Prefect API       {settings.prefect_api_url or 'local (embedded server)'}")


def _up(_: argparse.Namespace) -> None:
    from conveyor import stack

    stack.up()


def _down(_: argparse.Namespace) -> None:
    from conveyor import stack

    stack.down()


def main(argv: list[str] | None = None) -> None:
    runtime.configure()  # before a command imports prefect or mlflow
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate settings and reach the stores").set_defaults(handler=_check)
    commands.add_parser("up", help="start Prefect server + worker, MLflow server, chat API").set_defaults(
        handler=_up
    )
    commands.add_parser("down", help="stop what `up` started").set_defaults(handler=_down)
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except ConfigurationError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
