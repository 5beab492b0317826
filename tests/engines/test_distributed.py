"""torch.distributed helpers on 2 CPU processes (gloo, spawned here): sharded metrics gathered, ActNorm initialised
from the global batch, rank-0 writers, one copy of the weights; and the single-process behaviour of each."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine

WORLD = 2


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    from monai.handlers import CheckpointLoader, StatsHandler

    from monai_cnf.engines import BitsPerDim, GatheredMetric, MaxFScoreMetric, main_process_only
    from monai_cnf.engines.distributed import broadcast_module
    from monai_cnf.networks.flows import ActNorm

    results = {}
    # metrics: rank r holds items r, r + 2, ... (a DistributedSampler with even_divisible=False); 5 items in all
    g = torch.Generator().manual_seed(0)
    bpd = torch.rand(5, generator=g)
    preds, labels = torch.rand(5, 1, 4, 4, generator=g), (torch.rand(5, 1, 4, 4, generator=g) > 0.5).float()
    mine = list(range(rank, 5, WORLD))
    m_bpd, m_f = GatheredMetric(BitsPerDim()), GatheredMetric(MaxFScoreMetric())
    for m in (m_bpd, m_f):
        m.reset()
    m_bpd.update(bpd[mine])
    m_f.update((preds[mine], labels[mine], None))
    results["bpd"], results["max_f"] = m_bpd.compute(), m_f.compute()
    # ActNorm: each rank initialises on its half of the batch, with the statistics of the whole batch
    x = torch.randn(4, 3, 5, 5, generator=g) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2.0
    layer = ActNorm(3, spatial_dims=2)
    layer(x[rank::WORLD])
    results["actnorm"] = (layer.bias.detach().clone(), layer.log_scale.detach().clone())
    # rank 0's weights everywhere
    net = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(net.weight, float(rank + 1))
    broadcast_module(net)
    results["weight"] = net.weight.detach().clone()
    # writers on rank 0 only; readers everywhere
    kept = main_process_only([StatsHandler(), CheckpointLoader(load_path="x.pt", load_dict={"net": net})])
    results["handlers"] = [type(h).__name__ for h in kept]
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("dist")
    mp.start_processes(_worker, args=(str(tmp / "pg"), str(tmp)), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_gathered_metrics_equal_the_metric_over_all_items(ranks) -> None:
    from monai_cnf.engines import MaxFScoreMetric

    g = torch.Generator().manual_seed(0)
    bpd = torch.rand(5, generator=g)
    preds, labels = torch.rand(5, 1, 4, 4, generator=g), (torch.rand(5, 1, 4, 4, generator=g) > 0.5).float()
    full_f = MaxFScoreMetric()
    full_f.reset()
    full_f.update((preds, labels, None))
    for r in ranks:  # every rank computes the value of the whole dataset: all agree on the best model
        assert r["bpd"] == pytest.approx(float(bpd.double().mean()), rel=1e-12)
        assert r["max_f"] == pytest.approx(full_f.compute(), rel=1e-12)


def test_actnorm_initialises_from_the_global_batch(ranks) -> None:
    from monai_cnf.networks.flows import ActNorm

    g = torch.Generator().manual_seed(0)
    torch.rand(5, generator=g), torch.rand(5, 1, 4, 4, generator=g), torch.rand(5, 1, 4, 4, generator=g)
    x = torch.randn(4, 3, 5, 5, generator=g) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2.0
    single = ActNorm(3, spatial_dims=2)
    single(x)  # one process, the whole batch
    for r in ranks:
        torch.testing.assert_close(r["actnorm"][0], single.bias.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(r["actnorm"][1], single.log_scale.detach(), rtol=0, atol=1e-6)
    half = ActNorm(3, spatial_dims=2)
    half(x[0::2])  # what a rank would compute alone: clearly different
    assert (half.log_scale - single.log_scale).abs().max() > 1e-2


def test_rank0_weights_and_writers(ranks) -> None:
    for r in ranks:
        assert torch.equal(r["weight"], torch.ones(2, 2))  # rank 0 constant 1 everywhere
    assert ranks[0]["handlers"] == ["StatsHandler", "CheckpointLoader"]
    assert ranks[1]["handlers"] == ["CheckpointLoader"]  # no logs on rank 1, but it resumes too


def test_single_process_helpers_are_identities() -> None:
    from monai.handlers import StatsHandler

    from monai_cnf.engines import (
        BitsPerDim,
        GatheredMetric,
        get_rank,
        get_world_size,
        is_main_process,
        main_process_only,
    )
    from monai_cnf.engines.distributed import all_reduce_mean, init_distributed

    assert (get_rank(), get_world_size(), is_main_process()) == (0, 1, True)
    handlers = [StatsHandler()]
    assert main_process_only(handlers) == handlers and main_process_only(None) is None
    t = torch.tensor([1.5])
    assert all_reduce_mean(t) is t
    m = GatheredMetric(BitsPerDim())
    engine = Engine(lambda e, b: {"bpd": b})
    m.attach(engine, "bpd")
    assert engine.run([torch.tensor([1.0, 2.0]), torch.tensor([6.0])]).metrics["bpd"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="distributed_state"):
        GatheredMetric(type("NoState", (BitsPerDim,), {"distributed_state": None})())
    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k in os.environ}
    try:
        with pytest.raises(RuntimeError, match="torchrun"):
            init_distributed("cpu")
    finally:
        os.environ.update(env)


def test_trainer_rejects_ddp_around_the_model_itself(tmp_path) -> None:
    from monai_cnf.engines import FlowObjective, FlowTrainer
    from monai_cnf.networks import ConditionalNormalizingFlow

    model = ConditionalNormalizingFlow(
        spatial_dims=2, in_channels=1, out_channels=1, num_levels=1, num_steps=1, hidden_channels=4,
        dequantization="none", conditioner_kwargs={"feature_channels": (4,)},
    )  # fmt: skip
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(ValueError, match="must wrap FlowObjective"):
            FlowTrainer("cpu", 1, [], torch.nn.parallel.DistributedDataParallel(model), opt)
        ddp = torch.nn.parallel.DistributedDataParallel(FlowObjective(model))
        trainer = FlowTrainer("cpu", 1, [], ddp, opt)
        assert trainer.model is model and trainer.objective is ddp
        x = torch.rand(2, 1, 8, 8)
        assert trainer.objective(x, x).shape == (2,) and math.isfinite(float(trainer.objective(x, x).detach().sum()))
    finally:
        dist.destroy_process_group()
