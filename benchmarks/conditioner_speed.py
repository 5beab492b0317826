"""Forward+backward time of the conditioners, as a share of a full CNF training step, measured side by side.

Two settings (the paper's):

* SR: ``RRDBConditioner`` (16 blocks, growth 32, 64 channels) on LR 32x32x3 images, batch 8, inside a 2x SR
  ``ConditionalNormalizingFlow`` (L=2, K=8, affine couplings, uniform dequantization, HR 64x64).
* DRIVE: ``VGGConditioner`` (32, 64 channels) on 256x256 patches, inside a binary CNF (L=2, K=8, additive).

For each, the conditioner alone (forward + backward of the sum of its outputs) and a full training step
(bits/dim loss, backward, Adam step) are timed in both memory formats (contiguous and channels_last), the four
measurements interleaved in every repeat, and the ratios are printed. ``--help`` lists the options;
``--quick`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable

import torch

from monai_cnf.networks import ConditionalNormalizingFlow, RRDBConditioner, VGGConditioner


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_setting(
    name: str,
    conditioner: torch.nn.Module,
    model: ConditionalNormalizingFlow,
    x: torch.Tensor,
    y: torch.Tensor,
    repeats: int,
    warmup: int,
    device: torch.device,
) -> dict[str, float]:
    """Median times (s) of the conditioner's fwd+bwd and of a full CNF training step, in both memory formats.

    The four measurements are interleaved in every repeat, so drifts in machine load hit them alike.
    """
    model.conditioner.load_state_dict(conditioner.state_dict())
    fns: dict[str, Callable[[], None]] = {}
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        tag = "channels_last" if channels_last else "contiguous"
        cond_copy = copy.deepcopy(conditioner).to(device, memory_format=fmt)
        model_copy = copy.deepcopy(model).to(device, memory_format=fmt)
        xs = x.to(device).contiguous(memory_format=fmt)
        ys = y.to(device).contiguous(memory_format=fmt)
        opt = torch.optim.Adam(model_copy.parameters(), lr=1e-4)

        def cond_step(net: torch.nn.Module = cond_copy, xs: torch.Tensor = xs) -> None:
            net.zero_grad(set_to_none=True)
            sum(h.sum() for h in net(xs)).backward()

        def train_step(
            net: ConditionalNormalizingFlow = model_copy,
            xs: torch.Tensor = xs,
            ys: torch.Tensor = ys,
            opt: torch.optim.Optimizer = opt,
        ) -> None:
            opt.zero_grad(set_to_none=True)
            net.bits_per_dim(ys, xs).mean().backward()
            opt.step()

        fns[f"cond_{tag}"] = cond_step
        fns[f"step_{tag}"] = train_step
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {key: [] for key in fns}
    for r in range(repeats):
        for key, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - t0)
        print(f"  ... {name} repeat {r + 1}: " + ", ".join(f"{k} {v[-1] * 1e3:.0f} ms" for k, v in times.items()))
    results = {key: statistics.median(v) for key, v in times.items()}
    print(f"\n== {name} (median of {repeats}) ==")
    for tag in ("contiguous", "channels_last"):
        c, s = results[f"cond_{tag}"], results[f"step_{tag}"]
        print(f"  {tag:14s} conditioner fwd+bwd {c * 1e3:9.1f} ms | CNF step {s * 1e3:9.1f} ms | share {c / s:6.1%}")
    for what in ("cond", "step"):
        ratio = results[f"{what}_contiguous"] / results[f"{what}_channels_last"]
        faster = "channels_last" if ratio > 1 else "contiguous"
        print(f"  {what}: contiguous / channels_last time = {ratio:.2f}  -> {faster} is faster")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--only", choices=["sr", "drive"], default=None)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows when redirected
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device={device} threads={torch.get_num_threads()} repeats={args.repeats} torch={torch.__version__}")

    if args.only in (None, "sr"):
        lr, batch, blocks, gc, nf = (8, 2, 2, 8, 16) if args.quick else (32, 8, 16, 32, 64)
        kwargs = {"num_blocks": blocks, "growth_channels": gc, "feature_channels": nf}
        cond = RRDBConditioner(2, 3, num_levels=2, scale=2, **kwargs)
        model = ConditionalNormalizingFlow(
            2,
            3,
            3,
            num_levels=2,
            num_steps=2 if args.quick else 8,
            hidden_channels=16 if args.quick else 64,
            conditioner="rrdb",
            coupling="affine",
            dequantization="uniform",
            scale=2,
            conditioner_kwargs=kwargs,
        )
        x = torch.rand(batch, 3, lr, lr)
        y = torch.randint(0, 256, (batch, 3, 2 * lr, 2 * lr)).float()
        print(
            f"SR: RRDB {blocks} blocks gc {gc} nf {nf}, LR {lr}x{lr}x3, batch {batch}; "
            f"CNF params {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M, "
            f"conditioner {sum(p.numel() for p in cond.parameters()) / 1e6:.2f} M"
        )
        bench_setting("SR 2x (RRDB)", cond, model, x, y, args.repeats, args.warmup, device)

    if args.only in (None, "drive"):
        size, batch = (32, 1) if args.quick else (256, 1)
        kwargs = {"feature_channels": (32, 64)}
        cond = VGGConditioner(2, 3, num_levels=2, **kwargs)
        model = ConditionalNormalizingFlow(
            2,
            3,
            1,
            num_levels=2,
            num_steps=2 if args.quick else 8,
            hidden_channels=16 if args.quick else 64,
            conditioner="vgg",
            coupling="additive",
            dequantization="binary",
            conditioner_kwargs=kwargs,
        )
        x = torch.rand(batch, 3, size, size)
        y = (torch.rand(batch, 1, size, size) > 0.9).float()
        print(
            f"DRIVE: VGG (32, 64) on {size}x{size}x3, batch {batch}; "
            f"CNF params {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M"
        )
        bench_setting("DRIVE (VGG)", cond, model, x, y, args.repeats, args.warmup, device)


if __name__ == "__main__":
    main()
