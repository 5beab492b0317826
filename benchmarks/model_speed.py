"""Memory and sampling speed of a whole CNF (conditioner + flow) at the SR config, each against itself.

Workload (issue 11's comparison with the paper's code): 2x SR, HR ``(B, 3, 64, 64)`` from LR ``(B, 3, 32, 32)``,
L=2, K=8, coupling width 128, affine couplings, RRDB conditioner with 4 blocks (growth 32, 64 features),
uniform dequantization, batch 8.

Two ratios, each measured in one run against the same model without the change:

* **conditioner checkpointing** (``use_checkpoint=True``: the conditioner's activations are recomputed in backward;
  the flow recomputes its own already): peak memory of a training step over the resident state (fresh subprocess
  per variant, as :mod:`flow_speed` measures it; ``torch.cuda.max_memory_allocated`` on CUDA) and the step time
  (interleaved, median). Targets: memory <= 0.5x, time <= 1.3x.
* **sampling** ``N`` samples of one image in chunks: ``sample_chunks`` (the conditioner runs once for all chunks,
  what :class:`~monai_cnf.engines.SampleInferer` does now) against one ``sample`` call per chunk (the conditioner
  per chunk, what it did before). Target <= 0.7x.

Usage::

    python benchmarks/model_speed.py --threads 1            # or through flow_speed.py, which prints it last
    python benchmarks/model_speed.py --quick                # batch 2, 2 repeats, 4 samples
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

import torch
from flow_speed import _reset_peak_rss, _rss_bytes, _sync, interleaved  # same timing and RSS method as flow_speed

from monai_cnf.networks import ConditionalNormalizingFlow

SCALE, HR, LEVELS, STEPS, HIDDEN = 2, 64, 2, 8, 128
RRDB = {"num_blocks": 4, "growth_channels": 32, "feature_channels": 64}


def build(use_checkpoint: bool, device: torch.device) -> ConditionalNormalizingFlow:
    torch.manual_seed(0)
    model = ConditionalNormalizingFlow(
        spatial_dims=2, in_channels=3, out_channels=3, num_levels=LEVELS, num_steps=STEPS, hidden_channels=HIDDEN,
        conditioner="rrdb", coupling="affine", dequantization="uniform", scale=SCALE, residual=True,
        learned_shift=True, conditioner_kwargs=RRDB, use_checkpoint=use_checkpoint,
    )  # fmt: skip
    return model.to(device)


def data(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 256, (batch, 3, HR, HR), generator=g).float()
    x = torch.rand(batch, 3, HR // SCALE, HR // SCALE, generator=g)
    return y.to(device), x.to(device)


def step_fn(model: ConditionalNormalizingFlow, y: torch.Tensor, x: torch.Tensor) -> Callable[[], float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = model.bits_per_dim(y, x).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def peak_worker(args: argparse.Namespace) -> int:
    """In a fresh process: the peak memory of one steady-state training step over the resident state."""
    device = torch.device(args.device)
    model = build(args.variant == "checkpointed", device).train()
    y, x = data(args.batch, device)
    step = step_fn(model, y, x)
    step()  # gradients, Adam state, ActNorm init, kernels: resident from here on
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        _reset_peak_rss()
        base = _rss_bytes("VmRSS")
    step()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _rss_bytes("VmHWM")) - base


def measure(device: str = "cpu", batch: int = 8, repeats: int = 3, num_samples: int = 8, threads: int | None = None):
    """Both ratios; returns the table rows ``(label, without, with, ratio, target)``."""
    dev = torch.device(device)
    peaks = {}
    for variant in ("plain", "checkpointed"):
        cmd = [sys.executable, __file__, "--variant", variant, "--device", device, "--batch", str(batch)]
        cmd += ["--threads", str(threads)] if threads else []
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed blocks go back to the OS: RSS = live memory
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        peaks[variant] = json.loads(out.strip().splitlines()[-1])["peak_bytes"]
    models = {v: build(v == "checkpointed", dev).train() for v in ("plain", "checkpointed")}
    y, x = data(batch, dev)
    steps = {v: step_fn(m, y, x) for v, m in models.items()}
    train = {k: v["wall"] for k, v in interleaved(steps, repeats, dev).items()}

    model = models["plain"].eval()
    one = x[:1]
    chunk = 1

    def per_chunk() -> None:  # before: SampleInferer called sample() once per chunk, the conditioner each time
        for _ in range(num_samples // chunk):
            model.sample(one, num_samples=chunk, temperature=0.8, chunk_size=chunk)

    def once() -> None:  # now: sample_chunks, the conditioner once
        for _ in model.sample_chunks(one, num_samples=num_samples, temperature=0.8, chunk_size=chunk):
            pass

    with torch.no_grad():
        timed = interleaved({"per_chunk": per_chunk, "once": once}, repeats, dev)
    sampling = {k: v["wall"] for k, v in timed.items()}
    mib = 2.0**20
    return [
        ("train step peak [MiB]", peaks["plain"] / mib, peaks["checkpointed"] / mib, "<= 0.50x"),
        ("train step wall [ms]", train["plain"] * 1e3, train["checkpointed"] * 1e3, "<= 1.30x"),
        (f"sample {num_samples} of 1 image [ms]", sampling["per_chunk"] * 1e3, sampling["once"] * 1e3, "<= 0.70x"),
    ]


def print_table(rows, header: str) -> None:
    print(header)
    print(f"{'':30s}{'before':>12s}{'after':>12s}{'ratio':>10s}{'target':>11s}")
    for label, a, b, target in rows:
        print(f"{label:30s}{a:12.1f}{b:12.1f}{b / a:9.2f}x{target:>11s}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="Default: 8 (quick: 2).")
    parser.add_argument("--repeats", type=int, default=None, help="Default: 3 (quick: 2).")
    parser.add_argument("--num-samples", type=int, default=None, help="Default: 8 (quick: 4).")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variant", choices=["plain", "checkpointed"], help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.quick else 8)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps({"peak_bytes": peak_worker(args)}))
        return
    repeats = args.repeats or (2 if args.quick else 3)
    samples = args.num_samples or (4 if args.quick else 8)
    rows = measure(args.device, args.batch, repeats, samples, args.threads)
    print_table(
        rows,
        f"whole CNF, SR config (HR {HR}x{HR}x3, L={LEVELS}, K={STEPS}, width {HIDDEN}, RRDB {RRDB['num_blocks']} "
        f"blocks), batch {args.batch}, {torch.get_num_threads()} threads, device {args.device}; "
        "before = without checkpointing / conditioner per chunk",
    )


if __name__ == "__main__":
    main()
