"""`conveyor` command: check configuration, start/stop the local stack, answer runs paused for approval."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def _approve(args: argparse.Namespace) -> None:
    """Answer a run paused for approval (run-agent-task's plan, a training run's promotion)."""
    import json
    import uuid

    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    try:
        run_id = uuid.UUID(args.run_id)
    except ValueError:
        raise ConfigurationError(f"not a flow run id: {args.run_id!r}") from None
    answer: dict = {"approve": not args.reject, "comment": args.comment}
    if args.plan:
        answer["plan"] = json.loads(args.plan.read_text())
    try:
        resume_flow_run(run_id, run_input=answer)
    except ObjectNotFound:
        raise ConfigurationError(f"no flow run {run_id}") from None
    except (NotPausedError, FlowPauseTimeout, RuntimeError) as exc:  # or the input does not fit its form
        raise ConfigurationError(f"flow run {run_id} refused the answer: {exc}") from None
    print(f"{'rejected' if args.reject else 'approved'}: flow run {run_id}")


def main(argv: list[str] | None = None) -> None:
    runtime.configure()  # before a command imports prefect or mlflow
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate settings and reach the stores").set_defaults(handler=_check)
    commands.add_parser("up", help="start Prefect server + worker, MLflow server, chat API").set_defaults(
        handler=_up
    )
    commands.add_parser("down", help="stop what `up` started").set_defaults(handler=_down)
    approve = commands.add_parser("approve", help="approve (or --reject) a run paused for approval")
    approve.add_argument("run_id", help="the paused flow run's id")
    approve.add_argument("--reject", action="store_true", help="reject: the plan does not run / no promotion")
    approve.add_argument("--comment", default="", help="why (kept in the run's logs or on the model)")
    approve.add_argument("--plan", type=Path, help="run-agent-task: a JSON file with the edited plan to run")
    approve.set_defaults(handler=_approve)
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except ConfigurationError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
