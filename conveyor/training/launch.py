"""Running a fit as its own torchrun process group: on this node, and on the other nodes of a multi-node job.

Node 0 (the pod running the flow) publishes the fit's config in a small TCP key-value store on
MASTER_PORT+1; pods 1..N-1 start with `python -m flows.train_model --ddp-worker`, fetch it from there
and join the same process group through MASTER_ADDR/MASTER_PORT with their NODE_RANK.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from conveyor.training.fit import FitConfig, FitOutcome

REPO = Path(__file__).resolve().parents[2]
CONFIG_KEY = "conveyor/fit-config"
JOIN_TIMEOUT = timedelta(minutes=15)


def needs_launcher(config: FitConfig) -> bool:
    """Multi-process strategies other than ddp_spawn get their own process group, since Lightning's
    `ddp` launcher would re-execute the flow's script (a duplicate flow run) for every extra rank."""
    return config.devices * config.num_nodes > 1 and config.strategy != "ddp_spawn"


def launch(config: FitConfig) -> FitOutcome:
    """Run the fit with torchrun as node 0 of `config.num_nodes` and return rank 0's outcome."""
    config = config.model_copy(update={"strategy": "ddp" if config.strategy == "auto" else config.strategy})
    config_path = Path(config.checkpoint_dir) / "fit_config.json"
    config_path.write_text(config.model_dump_json(indent=2))
    address, port = _rendezvous()
    store = _publish(config, address, port) if config.num_nodes > 1 else None
    try:
        _run(torchrun_command(config.devices, config.num_nodes, 0, address, port, config_path))
    finally:
        del store
    return FitOutcome.model_validate_json(Path(config.outcome_path).read_text())


def join_as_worker() -> None:
    """On node NODE_RANK > 0: fetch node 0's fit config and join its process group until the fit ends."""
    from torch.distributed import TCPStore

    address, port = _rendezvous()
    node_rank = int(os.environ["NODE_RANK"])
    store = TCPStore(address, port + 1, is_master=False, timeout=JOIN_TIMEOUT)
    config = FitConfig.model_validate_json(store.get(CONFIG_KEY).decode())
    with tempfile.TemporaryDirectory(prefix="conveyor-ddp-worker-") as scratch:  # node 0 keeps the results
        folder = Path(scratch)
        config = config.model_copy(
            update={"checkpoint_dir": str(folder), "outcome_path": str(folder / "outcome.json")}
        )
        config_path = folder / "fit_config.json"
        config_path.write_text(config.model_dump_json())
        _run(torchrun_command(config.devices, config.num_nodes, node_rank, address, port, config_path))


def torchrun_command(
    devices: int, num_nodes: int, node_rank: int, address: str, port: int, config_path: Path
) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={devices}", f"--nnodes={num_nodes}",
        f"--node-rank={node_rank}", f"--master-addr={address}", f"--master-port={port}",
        "-m", "conveyor.training.fit", str(config_path),
    ]  # fmt: skip


def _publish(config: FitConfig, address: str, port: int):
    from torch.distributed import TCPStore

    store = TCPStore(address, port + 1, is_master=True, wait_for_workers=False, timeout=JOIN_TIMEOUT)
    store.set(CONFIG_KEY, config.model_dump_json())
    return store


def _rendezvous() -> tuple[str, int]:
    """MASTER_ADDR/MASTER_PORT from the environment (set by the cluster), else a free local port."""
    port = os.environ.get("MASTER_PORT")
    return os.environ.get("MASTER_ADDR", "127.0.0.1"), int(port) if port else _free_port()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"distributed fit exited with {done.returncode}:\n{tail}")
