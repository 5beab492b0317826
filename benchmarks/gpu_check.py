"""GPU check: the flow layer contract on the device, then training throughput and peak memory of the paper presets.

Rows of the one table it prints:

* ``contract``: every case of ``tests/networks/flows/test_layer_contract.py`` (2D and 3D), built in float64 with
  randomised parameters and moved to the device: exact inverse (max error) and logdet against the slogdet of the
  autograd Jacobian computed on the device (max error); ``ok`` when both are <= 1e-6.
* ``drive``: the DRIVE bundle's paper preset (``configs/train.json``: VGG conditioner, L=2, K=8, width 64, binary
  dequantization) on 1024x1024 images, batch 2; ``sr``: the SR bundle's paper preset (RRDB 8 blocks, L=2, K=8,
  width 64, affine, uniform dequantization) on 64x64 HR patches, batch 64. Each in float32 and with ``amp``
  (bf16 autocast where supported, else fp16 + GradScaler), through :class:`~monai_cnf.engines.FlowTrainer` itself:
  steps/s and images/s over the timed iterations after warm-up, peak memory (``torch.cuda.max_memory_allocated``
  during training; on CPU: not measured), and the last training loss in bits/dim.

Usage::

    bash benchmarks/gpu_check.sh                          # on a GPU machine, <= 10 min
    python benchmarks/gpu_check.py --device cpu --quick   # tiny shapes: checks that the script runs
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def contract(device: torch.device) -> dict[str, str]:
    """The layer contract on ``device``: inverse and Jacobian logdet errors over every case, float64."""
    from torch.autograd.functional import jacobian

    helpers = _load(ROOT / "tests" / "networks" / "flows" / "conftest.py", "_flow_conftest")
    cases = _load(ROOT / "tests" / "networks" / "flows" / "test_layer_contract.py", "_flow_contract")
    worst_inv = worst_det = 0.0
    count = 0
    for case in cases.CASES:
        for sd in (2, 3):
            layer = cases._build(case, sd, helpers.perturb_).to(device)
            x, cond = cases._inputs(case, sd, batch=2, size=cases._tiny_size(sd))
            x, cond = x.to(device), None if cond is None else cond.to(device)
            with torch.no_grad():
                z, logdet = layer(x, cond)
                worst_inv = max(worst_inv, float((layer.inverse(z, cond) - x).abs().max()))
            for b in range(2):
                c_b = None if cond is None else cond[b : b + 1]

                def f(v: torch.Tensor, c_b=c_b, layer=layer, shape=x.shape[1:]) -> torch.Tensor:
                    return layer(v.reshape(1, *shape), c_b)[0].reshape(-1)

                _, logabs = torch.linalg.slogdet(jacobian(f, x[b].reshape(-1)))
                worst_det = max(worst_det, float((logdet[b] - logabs).abs()))
            count += 1
    ok = worst_inv <= 1e-6 and worst_det <= 1e-6
    return {
        "run": "contract",
        "status": "ok" if ok else "FAIL",
        "detail": f"{count} layer cases; max |inverse - x| {worst_inv:.1e}; max |logdet - slogdet J| {worst_det:.1e}",
    }


def _network(bundle: str, overrides: dict) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / bundle / "configs" / "train.json"))
    parser.update({"bundle_root": str(ROOT / "bundles" / bundle), **overrides})
    return parser.get_parsed_content("network_def")


def throughput(name: str, device: torch.device, amp: bool, steps: int, warmup: int, quick: bool) -> dict[str, str]:
    """Train ``warmup + steps`` iterations of a paper preset with FlowTrainer on random data of the right kind."""
    from ignite.engine import Events

    from monai_cnf.engines import FlowTrainer

    g = torch.Generator().manual_seed(0)
    if name == "drive":
        size, batch = (64, 2) if quick else (1024, 2)
        over = {"num_steps": 2, "hidden_channels": 16, "feature_channels": [8, 16]} if quick else {}
        net = _network("drive_vessel", over)
        x = torch.rand(batch, 3, size, size, generator=g)
        y = (torch.rand(batch, 1, size, size, generator=g) > 0.88).float()
    else:
        hr, batch = (32, 4) if quick else (64, 64)
        over = {"num_steps": 2, "hidden_channels": 16, "rrdb_blocks": 1, "rrdb_feature_channels": 16} if quick else {}
        net = _network("super_resolution", over)
        y = torch.randint(0, 256, (batch, 3, hr, hr), generator=g).float()
        x = torch.nn.functional.avg_pool2d(y, 2) / 255.0
    net = net.to(device)
    params = sum(p.numel() for p in net.parameters())
    batches = [{"image": x, "label": y}] * (warmup + steps)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    trainer = FlowTrainer(device, 1, batches, net, opt, amp=amp, decollate=False, clip_grad_norm=10.0)
    marks: list[float] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _mark(engine) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if engine.state.iteration == warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        marks.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        trainer.run()
    except torch.OutOfMemoryError:
        return {"run": f"{name} {'amp' if amp else 'fp32'}", "status": "OOM", "detail": f"batch {batch}"}
    elapsed = marks[-1] - marks[warmup - 1]
    rate = steps / elapsed
    peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else "n/a (CPU)"
    loss = float(trainer.state.output["loss"])
    mode = f"amp {str(trainer.amp_settings['dtype']).replace('torch.', '')}" if amp else "fp32"
    return {
        "run": f"{name} {mode}",
        "status": "ok" if math.isfinite(loss) else "NaN",
        "detail": (
            f"{tuple(y.shape)} {params / 1e6:.2f}M params: {rate:.3f} steps/s, {rate * batch:.2f} img/s, "
            f"peak {peak}, loss {loss:.4f} bpd"
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=10, help="timed iterations per run")
    ap.add_argument("--warmup", type=int, default=3, help="iterations before timing (cuDNN autotune, allocator)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and widths (checks the script, e.g. on CPU)")
    ap.add_argument("--skip-contract", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --device cpu --quick to check the script only")
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}", flush=True)
    rows = [] if args.skip_contract else [contract(device)]
    for name in ("drive", "sr"):
        for amp in (False, True):
            rows.append(throughput(name, device, amp, args.steps, args.warmup, args.quick))
            print(f"  done: {rows[-1]['run']}", flush=True)
    width = max(len(r["run"]) for r in rows)
    print(f"\n| {'run'.ljust(width)} | status | detail |\n|{'-' * (width + 2)}|--------|--------|")
    for r in rows:
        print(f"| {r['run'].ljust(width)} | {r['status'].ljust(6)} | {r['detail']} |")


if __name__ == "__main__":
    main()
