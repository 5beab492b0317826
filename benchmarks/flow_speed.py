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

Peak memory of a training step, two ways. (1) Saved activations: the bytes of the distinct storages autograd keeps
for the backward pass (``torch.autograd.graph.saved_tensors_hooks``, parameters excluded): exact and deterministic.
(2) Peak over the resident state, each implementation in a fresh subprocess after a warm-up step: on CUDA
``torch.cuda.max_memory_allocated`` minus the memory allocated before the step; on CPU (``tracemalloc`` does not see
torch's allocations, and ``ru_maxrss`` cannot be reset and includes one-time costs such as oneDNN's JIT kernels)
the growth of ``VmHWM`` over ``VmRSS`` after resetting the peak through ``/proc/self/clear_refs``, with
``MALLOC_MMAP_THRESHOLD_`` set so that freed blocks return to the OS. Parameters, gradients and the Adam state are
resident in both and not counted in (2).

Timing: both flows live in one process and their calls are interleaved (ABAB...), medians of wall-clock and of
process CPU time are printed. On a shared machine use ``--threads 1`` and read the CPU-time rows: with several
threads, OpenMP's spin-waiting under contention inflates CPU time and wall time alike.

Usage::

    python benchmarks/flow_speed.py                    # full workload, 5 repeats, CPU
    python benchmarks/flow_speed.py --quick            # batch 2, 2 repeats
    python benchmarks/flow_speed.py --device cuda --repeats 20

Last, it prints the whole model's ratios of :mod:`model_speed` (conditioner checkpointing: peak memory and step
time; sampling N samples of one image with the conditioner once), unless ``--no-model``.
"""

from __future__ import annotations

import argparse
import json
import os
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
    def __init__(self, device: torch.device, recompute: bool = True) -> None:
        subnet = conv_subnet_factory(2, HIDDEN, recompute_hidden=recompute)
        self.model = ConditionalGlow(
            2, IN_CHANNELS, [COND_CHANNELS] * LEVELS, LEVELS, STEPS, HIDDEN, coupling="affine", clamp=2.0, subnet=subnet
        ).to(device)

    def nll(self, y: torch.Tensor, conds: list[torch.Tensor]) -> torch.Tensor:
        return -self.model.log_prob(y, conds)

    def sample(self, conds: list[torch.Tensor]) -> torch.Tensor:
        return self.model.sample(conds, temperature=1.0)


class FrEIAFlow:
    def __init__(self, device: torch.device, block: str = "allinone") -> None:
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm

        # the very same layers and initialisation as an ordinary nn.Sequential: our subnet's lean backward pass
        # (no stored concatenation, recomputed hidden map) is part of what is being compared
        make = conv_subnet_factory(2, HIDDEN)

        def subnet(c_in: int, c_out: int) -> nn.Module:
            return nn.Sequential(*make(c_in, c_out))

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


def build(
    impl: str, device: torch.device, freia_block: str, channels_last: bool = False, recompute: bool = True
) -> Ours | FrEIAFlow:
    torch.manual_seed(0)
    flow = Ours(device, recompute) if impl == "ours" else FrEIAFlow(device, freia_block)
    if channels_last:
        module(flow).to(memory_format=torch.channels_last)
    return flow


def module(flow: Ours | FrEIAFlow) -> nn.Module:
    return flow.model if isinstance(flow, Ours) else flow.inn


def num_params(flow: Ours | FrEIAFlow) -> int:
    return sum(p.numel() for p in module(flow).parameters() if p.requires_grad)


def inputs_for(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    y, conds = make_inputs(args.batch, device)
    if args.channels_last:
        y = y.contiguous(memory_format=torch.channels_last)
        conds = [c.contiguous(memory_format=torch.channels_last) for c in conds]
    if args.cond_grad:  # the conditioner is trained jointly: gradients flow into the features
        conds = [c.requires_grad_() for c in conds]
    return y, conds


# --------------------------------------------------------------------------------------------- measurements
def train_step_fn(flow: Ours | FrEIAFlow, y: torch.Tensor, conds: list[torch.Tensor]) -> Callable[[], float]:
    params = [p for p in module(flow).parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    dims = y[0].numel()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        for c in conds:
            c.grad = None
        loss = flow.nll(y, conds).mean() / (dims * 0.6931471805599453)  # bits/dim
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict[str, dict[str, float]]:
    """Median wall and CPU time of each function, calls interleaved (ABAB...) so that load changes on a shared
    machine hit every implementation alike; one warm-up call each (ActNorm init, allocator, kernels)."""
    for fn in fns.values():
        fn()
    walls: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            w, c = timed(fn, device)
            walls[key].append(w)
            cpus[key].append(c)
    return {k: {"wall": statistics.median(walls[k]), "cpu": statistics.median(cpus[k])} for k in fns}


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def saved_activation_bytes(flow: Ours | FrEIAFlow, y: torch.Tensor, conds: list[torch.Tensor]) -> int:
    """Bytes of the distinct tensor storages autograd keeps for the backward pass of the NLL (parameters excluded).

    Deterministic (unlike the RSS of a shared machine): the activation memory a training step holds at its peak,
    before the backward pass frees it.
    """
    params = {p.untyped_storage().data_ptr() for p in module(flow).parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = flow.nll(y, conds).mean()
    del loss
    return sum(seen.values())


def conv_reference(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
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
            net = nn.Sequential(*make(passive + COND_CHANNELS, 2 * active)).to(device)  # plain autograd
            nn.init.normal_(net[-1].weight, std=0.01)
            x = torch.randn(args.batch, passive + COND_CHANNELS, size, size, device=device)
            if args.channels_last:
                net.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            stacks.append(net)
            inputs.append(x.requires_grad_())
        channels = passive

    def run() -> None:
        total = sum(net(x).square().mean() for net, x in zip(stacks, inputs, strict=True))
        total.backward()

    flops = count_flops(run)
    t = interleaved({"conv": run}, args.repeats, device)["conv"]
    return {"flops": flops, "wall": t["wall"], "cpu": t["cpu"]}


def _rss_bytes(field: str) -> int:
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) of this process, in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status (Linux only)")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Fresh process, one implementation: the peak memory of a steady-state training step over the resident state.

    A warm-up step first allocates everything that persists (gradients, Adam state, oneDNN JIT kernels, ActNorm
    init); then the peak is reset and one more step is measured. What remains is what a step needs on top of the
    resident model: the activations kept for backward, backward temporaries and the optimizer's temporaries.
    """
    device = torch.device(args.device)
    flow = build(args.impl, device, args.freia_block, args.channels_last, not args.no_recompute)
    y, conds = inputs_for(args, device)
    step = train_step_fn(flow, y, conds)
    step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        # MALLOC_MMAP_THRESHOLD_ (set by the parent) makes freed blocks go back to the OS, so RSS tracks live memory
        _reset_peak_rss()
        base = _rss_bytes("VmRSS")
    step()
    _sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _rss_bytes("VmHWM") - base
    return {"impl": args.impl, "train_peak_bytes": peak}


def profile(args: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    device = torch.device(args.device)
    for impl in ("ours", "freia"):
        flow = build(impl, device, args.freia_block, args.channels_last, not args.no_recompute)
        y, conds = inputs_for(args, device)
        step = train_step_fn(flow, y, conds)
        step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with tprofile(activities=activities) as prof:
            step()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"=== {impl}: training step profile ===")
        print(prof.key_averages().table(sort_by=sort, row_limit=15))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda. Default: cpu.")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median). Default: 5 (quick: 2).")
    parser.add_argument("--batch", type=int, default=None, help="batch size. Default: 8 (quick: 2).")
    parser.add_argument("--quick", action="store_true", help="batch 2 and 2 repeats (same architecture).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads. Default: torch's default.")
    parser.add_argument("--freia-block", choices=["allinone", "glow"], default="allinone")
    parser.add_argument("--channels-last", action="store_true", help="channels_last tensors and weights (both).")
    parser.add_argument("--cond-grad", action="store_true", help="features require grad (conditioner trained jointly).")
    parser.add_argument(
        "--no-recompute", action="store_true", help="ours: store the second hidden map (faster, more memory)."
    )
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables and exit.")
    parser.add_argument(
        "--no-model", action="store_true", help="skip the whole-model table (benchmarks/model_speed.py) at the end."
    )
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
        f"workload: y ({args.batch}, {IN_CHANNELS}, {SIZE}, {SIZE}), conds {COND_CHANNELS} ch per level, L={LEVELS}, "
        f"K={STEPS}, hidden {HIDDEN}, affine; features {'trained (require grad)' if args.cond_grad else 'fixed'}; "
        f"{'channels_last' if args.channels_last else 'contiguous'}; device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.repeats} repeats (interleaved); FrEIA block: {args.freia_block}; "
        f"ours {'stores' if args.no_recompute else 'recomputes'} the second hidden map"
    )
    flows = {
        impl: build(impl, device, args.freia_block, args.channels_last, not args.no_recompute)
        for impl in ("ours", "freia")
    }
    data = {impl: inputs_for(args, device) for impl in flows}
    info: dict[str, dict[str, float]] = {}
    steps = {}
    for impl, flow in flows.items():
        y, conds = data[impl]
        steps[impl] = train_step_fn(flow, y, conds)
        steps[impl]()  # ActNorm data init before counting
        info[impl] = {
            "params": num_params(flow),
            "flops": count_flops(steps[impl]),
            "saved": saved_activation_bytes(flow, y, conds),
        }
    train = interleaved(steps, args.repeats, device)
    for flow in flows.values():
        module(flow).eval()
    with torch.no_grad():
        sample = interleaved(
            {impl: (lambda f=flow, c=data[impl][1]: f.sample(c)) for impl, flow in flows.items()}, args.repeats, device
        )
    for impl in flows:
        cmd = [sys.executable, __file__, "--impl", impl, "--device", args.device, "--batch", str(args.batch)]
        cmd += ["--freia-block", args.freia_block] + (["--threads", str(args.threads)] if args.threads else [])
        cmd += (["--channels-last"] if args.channels_last else []) + (["--cond-grad"] if args.cond_grad else [])
        cmd += ["--no-recompute"] if args.no_recompute else []
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        info[impl]["peak"] = json.loads(out.strip().splitlines()[-1])["train_peak_bytes"]
    conv = conv_reference(args, device)

    ours, freia = info["ours"], info["freia"]
    mib = 2.0**20
    rows = [
        ("parameters", ours["params"], freia["params"], "d"),
        ("train GFLOP (fwd+bwd)", ours["flops"] / 1e9, freia["flops"] / 1e9, ".2f"),
        ("train step wall [ms]", train["ours"]["wall"] * 1e3, train["freia"]["wall"] * 1e3, ".0f"),
        ("train step CPU [ms]", train["ours"]["cpu"] * 1e3, train["freia"]["cpu"] * 1e3, ".0f"),
        ("sample wall [ms]", sample["ours"]["wall"] * 1e3, sample["freia"]["wall"] * 1e3, ".0f"),
        ("sample CPU [ms]", sample["ours"]["cpu"] * 1e3, sample["freia"]["cpu"] * 1e3, ".0f"),
        ("saved activations [MiB]", ours["saved"] / mib, freia["saved"] / mib, ".1f"),
        ("train step peak [MiB]", ours["peak"] / mib, freia["peak"] / mib, ".1f"),
    ]
    print(f"{'':26s}{'ours':>12s}{'FrEIA':>12s}{'ours/FrEIA':>12s}")
    for label, a, b, fmt in rows:
        print(f"{label:26s}{a:12{fmt}}{b:12{fmt}}{a / b:12.2f}")
    clock = "cpu" if device.type == "cpu" else "wall"
    g_ours = ours["flops"] / train["ours"][clock] / 1e9
    g_freia = freia["flops"] / train["freia"][clock] / 1e9
    g_conv = conv["flops"] / conv[clock] / 1e9
    print(
        f"GFLOP/s ({clock} time): ours {g_ours:.1f}, FrEIA {g_freia:.1f}, plain conv stack of the same subnet convs "
        f"(fwd+bwd, {conv['flops'] / 1e9:.2f} GFLOP) {g_conv:.1f} -> ours at {100 * g_ours / g_conv:.0f}% of it"
    )
    # When both flows run at (nearly) the conv throughput, the step-time ratio is bounded below by the FLOP ratio:
    # print that floor, so a missed time target reads as "needs fewer FLOPs" or "needs less overhead".
    floor = ours["flops"] / (g_conv * 1e9)
    print(
        f"FLOP floor: ours' {ours['flops'] / 1e9:.2f} GFLOP at the plain conv's {g_conv:.1f} GFLOP/s = "
        f"{floor * 1e3:.0f} ms = {floor / train['freia'][clock]:.2f}x FrEIA's measured step; "
        f"overhead above the floor: {100 * (train['ours'][clock] / floor - 1):.0f}% (ours), "
        f"{100 * (train['freia'][clock] / (freia['flops'] / (g_conv * 1e9)) - 1):.0f}% (FrEIA)"
    )
    peak_kind = "CUDA max allocated" if device.type == "cuda" else "peak RSS over resident, fresh process"
    print(
        f"targets: step <= 0.70x FrEIA: {train['ours'][clock] / train['freia'][clock]:.2f}x ({clock}); "
        f"peak memory <= 0.80x FrEIA: {ours['peak'] / freia['peak']:.2f}x ({peak_kind}), "
        f"{ours['saved'] / freia['saved']:.2f}x (saved activations); "
        f">= 50% of conv throughput: {100 * g_ours / g_conv:.0f}%"
    )
    if not args.no_model:  # the whole model's memory and sampling ratios (conditioner checkpointing, issue 11)
        import model_speed

        rows = model_speed.measure(args.device, args.batch, args.repeats, 4 if args.quick else 8, args.threads)
        model_speed.print_table(rows, "whole CNF (conditioner + flow), SR config: checkpointing and sampling")


if __name__ == "__main__":
    main()
