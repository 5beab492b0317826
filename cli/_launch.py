"""``cnf train --nproc-per-node N``: start PyTorch's own launcher (``torchrun``) on ``cnf train`` itself.

Nothing here distributes anything: the command line is handed to ``python -m torch.distributed.run`` (``torchrun``),
which starts N worker processes running the same ``cnf train``; each worker sees torchrun's environment
(``LOCAL_RANK``, ``WORLD_SIZE``, ...) and adds the bundle's ``configs/multi_gpu_train.json`` overlay.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from monai_cnf.cli._errors import CLIError

__all__ = [
    "MULTI_GPU_TRAIN",
    "is_torchrun_worker",
    "launch_training",
    "torchrun_command",
    "worker_args",
    "worker_rank",
]

#: the overlay every worker adds to the training configs (the model zoo's name)
MULTI_GPU_TRAIN = "multi_gpu_train"


def is_torchrun_worker() -> bool:
    """True in a process started by ``torchrun`` (it sets ``LOCAL_RANK`` and ``WORLD_SIZE``)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def worker_rank() -> int:
    """This process's global rank under ``torchrun`` (0 otherwise)."""
    return int(os.environ.get("RANK", "0"))


def worker_args(command: str, bundle: Path, options: Mapping[str, Any]) -> list[str]:
    """The ``cnf`` arguments that repeat a command in each worker: ``[command, bundle, --opt value, ...]``.

    None is left out; a bool becomes ``--flag`` / ``--no-flag``; a list repeats its option; an Enum gives its value.

    Example:
        >>> worker_args("train", Path("b"), {"max_epochs": 2, "resume": False, "override": ["a=1", "b=2"], "x": None})
        ['train', 'b', '--max-epochs', '2', '--no-resume', '--override', 'a=1', '--override', 'b=2']
    """
    args = [command, str(bundle)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value.value if isinstance(value, Enum) else value)]
    return args


def torchrun_command(
    cnf_args: Sequence[str],
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
) -> list[str]:
    """``python -m torch.distributed.run ... -m monai_cnf.cli <cnf_args>``: one node (``--standalone``) or several
    (static rendezvous: node ``node_rank`` of ``nnodes``, node 0 listening at ``rdzv_endpoint`` ``HOST:PORT``).

    Example:
        >>> torchrun_command(["train", "b"], 2)[1:]
        ['-m', 'torch.distributed.run', '--nproc-per-node', '2', '--standalone', '-m', 'monai_cnf.cli', 'train', 'b']
        >>> torchrun_command(["train", "b"], 4, nnodes=2, node_rank=1, rdzv_endpoint="node0:29500")[3:11]
        ['4', '--nnodes', '2', '--node-rank', '1', '--rdzv-backend', 'static', '--rdzv-endpoint']
        >>> torchrun_command(["train", "b"], 0)
        Traceback (most recent call last):
        ...
        monai_cnf.cli._errors.CLIError: --nproc-per-node must be >= 1 (processes on this machine, one per GPU), got 0.
    """
    if nproc_per_node < 1:
        raise CLIError(f"--nproc-per-node must be >= 1 (processes on this machine, one per GPU), got {nproc_per_node}.")
    if nnodes < 1:
        raise CLIError(f"--nnodes must be >= 1, got {nnodes}.")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc_per_node)]
    if nnodes == 1:
        if node_rank not in (None, 0) or rdzv_endpoint is not None:
            raise CLIError("--node-rank / --rdzv-endpoint are for several machines: pass --nnodes too.")
        cmd.append("--standalone")
    else:
        if node_rank is None or not 0 <= node_rank < nnodes:
            raise CLIError(f"--nnodes {nnodes}: pass --node-rank between 0 and {nnodes - 1} (0 on the first machine).")
        host, _, port = (rdzv_endpoint or "").rpartition(":")
        if not host or not port.isdigit():
            raise CLIError(
                f"--nnodes {nnodes}: pass --rdzv-endpoint HOST:PORT, the address of the --node-rank 0 machine "
                f"reachable from every node (got {rdzv_endpoint!r})."
            )
        cmd += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "static"]
        cmd += ["--rdzv-endpoint", rdzv_endpoint]  # type: ignore[list-item]
    return [*cmd, "-m", "monai_cnf.cli", *cnf_args]


def launch(cmd: Sequence[str], verbose: bool = False) -> int:
    """Run torchrun in the foreground; its exit status (the first failed worker's) is the command's."""
    import subprocess

    env = {**os.environ, **({"CNF_VERBOSE": "1"} if verbose else {})}
    try:
        return subprocess.call(list(cmd), env=env)
    except KeyboardInterrupt:  # torchrun forwards the signal to its workers and reports them
        return 130


def launch_training(
    bundle: Path,
    options: Mapping[str, Any],
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
) -> int:
    """Check what one process can check (launcher options, the bundle, the run folder), then run ``cnf train``
    under torchrun; returns torchrun's exit status."""
    from monai_cnf.cli._errors import STATE

    from monai_cnf.bundle.files import load_bundle
    from monai_cnf.bundle.workflows import check_run_dir, default_run_dir

    cmd = torchrun_command([], nproc_per_node, nnodes, node_rank, rdzv_endpoint)
    found = load_bundle(bundle)  # fail here, once, rather than in every worker
    found.config(MULTI_GPU_TRAIN, "needed by --nproc-per-node")
    model = options.get("model")
    model_name = str(model.value if isinstance(model, Enum) else model or "cnf")
    check_run_dir(default_run_dir(found.name, model_name, options.get("run_dir")), bool(options.get("resume")))
    return launch([*cmd, *worker_args("train", bundle, options)], bool(STATE.get("verbose")))
