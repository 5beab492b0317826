"""Speed and memory of ConditionalGlow next to the closest FrEIA 0.2 equivalent, measured side by side.

Workload (the SR setting of the paper): HR targets ``(B, 3, 64, 64)`` conditioned on 64-channel features at each
level (``(B, 64, 32, 32)`` and ``(B, 64, 16, 16)``), L=2 levels, K=8 steps per level, coupling subnets of width 128
(3x3 conv - ReLU - 1x1 conv - ReLU - 3x3 conv), affine coupling with soft clamp 2, batch 8.

* ours: ``monai_cnf.networks.flows.ConditionalGlow`` (ActNorm + LU 1x1 conv fused into one conv, one conditional
  affine coupling per step, conditional split and top priors).
* FrEIA: ``GraphINN`` of IRevNetDownsampling -> K x AllInOneBlock (conditional affine coupling + global affine
  (ActNorm-like) + a random orthogonal 1x1 conv, i.e. one subnet per step, like ours) -> Split -> ... with a standard
  normal on the outputs (FrEIA has no conditional prior; ours pays for its prior convs). ``--freia-block glow`` uses
  ActNorm + PermuteRandom + GLOWCouplingBlock instead (two subnets per step: twice our coupling work).
  Both use the same subnet factory.

Measured: a training step (NLL in bits/dim + backward + Adam step) and sampling (no grad), median over
``--repeats`` after one warm-up; peak memory of a training step; FLOPs of one training step (forward + backward,
``torch.utils.flop_counter.FlopCounterMode``) and achieved GFLOP/s, next to the GFLOP/s of a plain conv stack made of
the very same subnet convolutions (forward + backward, no flow around them) measured in the same run.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` minus the memory allocated before the step. On CPU,
``tracemalloc`` does not see torch's allocations, so every (implementation, task) pair runs in a fresh subprocess
and we report the growth of the process' peak resident set size (``resource.getrusage(...).ru_maxrss``) from
just before the first training step to the end; this counts activations kept for backward, gradients and the Adam
state (the same for both: equal parameter counts up to the priors), plus allocator slack, the same way for both.

Usage::

    python benchmarks/flow_speed.py                    # full workload, 5 repeats, CPU
    python benchmarks/flow_speed.py --quick            # batch 2, 2 repeats
    python benchmarks/flow_speed.py --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from monai_cnf.networks.conditioners.subnets import conv_subnet_factory
from monai_cnf.networks.flows import ConditionalGlow

IN_CHANNELS, SIZE, COND_CHANNELS, LEVELS, STEPS, HIDDEN = 3, 64, 64, 2, 8, 128


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(batch: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(batch, IN_CHANNELS, SIZE, SIZE, generator=gen)
    conds = [
        torch.randn(batch, COND_CHANNELS, SIZE // 2 ** (lvl + 1), SIZE // 2 ** (lvl + 1), generator=gen)
        for lvl in range(LEVELS)
    ]
    return y.to(device), [c.to(device) for c in conds]


# --------------------------------------------------------------------------------------------- the two flows
class Ours:
    def __init__(self, device: torch.device) -> None:
        self.model = ConditionalGlow(
            2, IN_CHANNELS, [COND_CHANNELS] * LEVELS, LEVELS, STEPS, HIDDEN, coupling="affine", clamp=2.0
        ).to(device)

    def nll(self, y: torch.Tensor, conds: list[torch.Tensor]) -> torch.Tensor:
        return -self.model.log_prob(y, conds)

    def sample(self, conds: list[torch.Tensor]) -> torch.Tensor:
        return self.model.sample(conds, temperature=1.0)


class FrEIAFlow:
    def __init__(self, device: torch.device, block: str = "allinone") -> None:
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm

        subnet = conv_subnet_factory(2, HIDDEN)
        inp = Ff.InputNode(IN_CHANNELS, SIZE, SIZE, name="y")
        cond_nodes = [
            Ff.ConditionNode(COND_CHANNELS, SIZE // 2 ** (lvl + 1), SIZE // 2 ** (lvl + 1), name=f"h{lvl}")
            for lvl in range(LEVELS)
        ]
        nodes: list[Any] = [inp]
        outputs: list[Any] = []
        x: Any = inp
        channels = IN_CHANNELS
        for lvl in range(LEVELS):
            nodes.append(Ff.Node(x, Fm.IRevNetDownsampling, {}))
            x = nodes[-1]
            channels *= 4
            for _ in range(STEPS):
                if block == "allinone":
                    args = {"subnet_constructor": subnet, "affine_clamping": 2.0, "permute_soft": True}
                    nodes.append(Ff.Node(x, Fm.AllInOneBlock, args, conditions=cond_nodes[lvl]))
                else:
                    nodes.append(Ff.Node(x, Fm.ActNorm, {}))
                    nodes.append(Ff.Node(nodes[-1], Fm.PermuteRandom, {}))
                    args = {"subnet_constructor": subnet, "clamp": 2.0}
                    nodes.append(Ff.Node(nodes[-1], Fm.GLOWCouplingBlock, args, conditions=cond_nodes[lvl]))
                x = nodes[-1]
            if lvl < LEVELS - 1:
                kept = channels - channels // 2
                split = Ff.Node(x, Fm.Split, {"section_sizes": [kept, channels - kept], "dim": 0})
                nodes.append(split)
                outputs.append(Ff.OutputNode(split.out1, name=f"z{lvl}"))
                x, channels = split.out0, kept
        outputs.append(Ff.OutputNode(x, name=f"z{LEVELS - 1}"))
        self.inn = Ff.GraphINN([*nodes, *cond_nodes, *outputs]).to(device)
        with torch.no_grad():
            y, conds = make_inputs(1, device)
            self.out_shapes = [tuple(z.shape[1:]) for z in self.inn(y, c=conds)[0]]

    def nll(self, y: torch.Tensor, conds: list[torch.Tensor]) -> torch.Tensor:
        zs, log_jac = self.inn(y, c=conds)
        return sum(0.5 * z.square().flatten(1).sum(1) for z in zs) - log_jac  # + const: not needed for timing

    def sample(self, conds: list[torch.Tensor]) -> torch.Tensor:
        batch = conds[0].shape[0]
        zs = [torch.randn(batch, *s, device=conds[0].device) for s in self.out_shapes]
        return self.inn(zs, c=conds, rev=True, jac=False)[0]


def build(impl: str, device: torch.device, freia_block: str) -> Ours | FrEIAFlow:
    torch.manual_seed(0)
    return Ours(device) if impl == "ours" else FrEIAFlow(device, freia_block)


def num_params(flow: Ours | FrEIAFlow) -> int:
    module = flow.model if isinstance(flow, Ours) else flow.inn
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------- measurements
def _median_time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (ActNorm data init, allocator, kernels)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_fn(flow: Ours | FrEIAFlow, y: torch.Tensor, conds: list[torch.Tensor]) -> Callable[[], float]:
    module = flow.model if isinstance(flow, Ours) else flow.inn
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    dims = y[0].numel()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = flow.nll(y, conds).mean() / (dims * 0.6931471805599453)  # bits/dim
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def conv_reference(batch: int, device: torch.device, repeats: int) -> dict[str, float]:
    """GFLOP/s of the flow's own subnet convolutions run as a plain stack (forward + backward), no flow around."""
    torch.manual_seed(0)
    make = conv_subnet_factory(2, HIDDEN)
    stacks, inputs = [], []
    channels = IN_CHANNELS
    for lvl in range(LEVELS):
        channels *= 4
        size = SIZE // 2 ** (lvl + 1)
        passive, active = channels - channels // 2, channels // 2
        for _ in range(STEPS):
            net = make(passive + COND_CHANNELS, 2 * active).to(device)
            nn.init.normal_(net[-1].weight, std=0.01)
            stacks.append(net)
            inputs.append(torch.randn(batch, passive + COND_CHANNELS, size, size, device=device, requires_grad=True))
        channels = passive if lvl < LEVELS - 1 else channels

    def run() -> None:
        total = sum(net(x).square().mean() for net, x in zip(stacks, inputs, strict=True))
        total.backward()

    flops = count_flops(run)
    seconds = _median_time(run, repeats, device)
    return {"conv_flops": flops, "conv_s": seconds, "conv_gflops": flops / seconds / 1e9}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in a fresh process: one implementation, train-step time + peak memory, sampling time, FLOPs."""
    device = torch.device(args.device)
    flow = build(args.impl, device, args.freia_block)
    y, conds = make_inputs(args.batch, device)
    step = train_step_fn(flow, y, conds)
    result: dict[str, Any] = {"impl": args.impl, "params": num_params(flow)}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _peak_rss_bytes()
    result["train_s"] = _median_time(step, args.repeats, device)
    if device.type == "cuda":
        result["train_peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
    else:
        result["train_peak_bytes"] = _peak_rss_bytes() - base
    result["train_flops"] = count_flops(step)
    module = flow.model if isinstance(flow, Ours) else flow.inn
    module.eval()
    with torch.no_grad():
        result["sample_s"] = _median_time(lambda: flow.sample(conds), args.repeats, device)
    return result


def profile(args: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    device = torch.device(args.device)
    for impl in ("ours", "freia"):
        flow = build(impl, device, args.freia_block)
        y, conds = make_inputs(args.batch, device)
        step = train_step_fn(flow, y, conds)
        step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with tprofile(activities=activities, record_shapes=False) as prof:
            step()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"=== {impl}: training step profile ===")
        print(prof.key_averages().table(sort_by=sort, row_limit=18))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda. Default: cpu.")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median). Default: 5 (quick: 2).")
    parser.add_argument("--batch", type=int, default=None, help="batch size. Default: 8 (quick: 2).")
    parser.add_argument("--quick", action="store_true", help="batch 2 and 2 repeats (same architecture).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads. Default: torch's default.")
    parser.add_argument("--freia-block", choices=["allinone", "glow"], default="allinone")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables and exit.")
    parser.add_argument("--impl", choices=["ours", "freia"], help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.batch = args.batch or (2 if args.quick else 8)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.impl:
        print(json.dumps(worker(args)))
        return
    if args.profile:
        profile(args)
        return

    device = torch.device(args.device)
    print(
        f"workload: y (B={args.batch}, {IN_CHANNELS}, {SIZE}, {SIZE}), conds {COND_CHANNELS} ch per level, L={LEVELS}, "
        f"K={STEPS}, hidden {HIDDEN}, affine; device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, repeats {args.repeats}; FrEIA block: {args.freia_block}"
    )
    results = {}
    for impl in ("ours", "freia"):
        cmd = [sys.executable, __file__, "--impl", impl, "--device", args.device, "--repeats", str(args.repeats)]
        cmd += ["--batch", str(args.batch), "--freia-block", args.freia_block]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy()).stdout
        results[impl] = json.loads(out.strip().splitlines()[-1])
    conv = conv_reference(args.batch, device, args.repeats)
    ours, freia = results["ours"], results["freia"]
    mib = 2.0**20
    print(f"{'':24s}{'ours':>12s}{'FrEIA':>12s}{'ours/FrEIA':>12s}")
    print(f"{'parameters':24s}{ours['params']:12d}{freia['params']:12d}{ours['params'] / freia['params']:12.2f}")
    for key, label, scale, fmt in (
        ("train_s", "train step [ms]", 1e3, ".1f"),
        ("sample_s", "sample [ms]", 1e3, ".1f"),
        ("train_peak_bytes", "train peak mem [MiB]", 1 / mib, ".1f"),
        ("train_flops", "train GFLOP", 1e-9, ".2f"),
    ):
        a, b = ours[key] * scale, freia[key] * scale
        print(f"{label:24s}{a:12{fmt}}{b:12{fmt}}{a / b:12.2f}")
    ours_gflops = ours["train_flops"] / ours["train_s"] / 1e9
    freia_gflops = freia["train_flops"] / freia["train_s"] / 1e9
    print(f"{'train GFLOP/s':24s}{ours_gflops:12.1f}{freia_gflops:12.1f}")
    print(
        f"plain conv stack (the same subnet convs, fwd+bwd): {conv['conv_gflops']:.1f} GFLOP/s "
        f"({conv['conv_flops'] / 1e9:.2f} GFLOP in {conv['conv_s'] * 1e3:.1f} ms); "
        f"ours achieves {100 * ours_gflops / conv['conv_gflops']:.0f}% of it, FrEIA "
        f"{100 * freia_gflops / conv['conv_gflops']:.0f}%"
    )
    print(
        f"targets: step <= 0.70x FrEIA: {ours['train_s'] / freia['train_s']:.2f}x; "
        f"peak memory <= 0.80x FrEIA: {ours['train_peak_bytes'] / freia['train_peak_bytes']:.2f}x; "
        f">= 50% of conv throughput: {100 * ours_gflops / conv['conv_gflops']:.0f}%"
    )


if __name__ == "__main__":
    main()
