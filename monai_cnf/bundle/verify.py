"""``cnf bundle verify``: offline checks of a bundle (no schema download, unlike ``monai.bundle verify_metadata``).

Metadata fields; every preset's network builds; the shipped weights load into the network their recorded preset
declares (``models/provenance.json``); MONAI's own ``verify_net_in_out`` with the model zoo's defaults; a forward
pass at the declared shape; and whether ``metadata.json``'s ``eval_metrics`` are missing or stale (measured with
other weights than ``models/model.pt``: ``eval_metrics_weights`` holds the first 12 hex digits of their sha256).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_cnf.bundle.files import Bundle, ModelKind, Workflow

__all__ = ["REQUIRED_IO_FIELDS", "REQUIRED_METADATA", "Check", "file_digest", "verify_bundle"]

#: Top-level fields of MONAI's model-zoo metadata schema that the bundles must fill.
REQUIRED_METADATA = (
    "schema",
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
#: Fields of ``network_data_format.inputs.image`` / ``outputs.pred``.
REQUIRED_IO_FIELDS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")


@dataclass
class Check:
    """One row of the verification table; ``warn`` rows are reported but do not fail the bundle."""

    name: str
    ok: bool
    detail: str
    warn: bool = False


def file_digest(path: Path) -> str:
    """The first 12 hex digits of a file's sha256 (what ``eval_metrics_weights`` records)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def check_results(bundle: Bundle) -> Check:
    """``eval_metrics`` of the metadata: numbers, measured with the shipped ``models/model.pt``."""
    metrics = bundle.metadata.get("eval_metrics") or {}
    name = "metadata.json eval_metrics"
    missing = [k for k, v in metrics.items() if not isinstance(v, int | float)]
    if not metrics or missing:
        what = ", ".join(f"{k}={metrics[k]!r}" for k in missing) if missing else "none recorded"
        return Check(name, False, f"missing results: {what}; run cnf evaluate and record them", warn=True)
    weights = bundle.weights(ModelKind.cnf)
    recorded = bundle.metadata.get("eval_metrics_weights")
    if weights.is_file() and recorded != file_digest(weights):
        return Check(
            name, False, f"stale: measured with weights {recorded or '(unrecorded)'}, models/model.pt is "
            f"{file_digest(weights)}; re-evaluate and update eval_metrics and eval_metrics_weights", warn=True,
        )  # fmt: skip
    return Check(name, True, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))


def check_metadata(bundle: Bundle) -> list[Check]:
    md = bundle.metadata
    missing = [k for k in REQUIRED_METADATA if k not in md or md[k] in (None, "", {}, [])]
    rows = [Check("metadata fields", not missing, f"missing: {', '.join(missing)}" if missing else "all present")]
    for side, key in (("inputs", "image"), ("outputs", "pred")):
        io = bundle.io(side, key)
        gone = [f for f in REQUIRED_IO_FIELDS if f not in io]
        what = f"network_data_format.{side}.{key}"
        rows.append(Check(what, bool(io) and not gone, f"missing: {', '.join(gone)}" if gone else _describe_io(io)))
    return rows


def _describe_io(io: dict[str, Any]) -> str:
    return f"{io.get('num_channels')} channel(s), spatial {io.get('spatial_shape')}, range {io.get('value_range')}"


def fake_spatial_shape(shape: list[Any], n: int = 1, any_size: int = 64) -> tuple[int, ...]:
    """Concrete sizes for a metadata ``spatial_shape``: ints as they are, MONAI patterns (``"4*n"``, ``"2**p"``)
    evaluated at ``n`` (and ``p = 1``), ``"*"`` as ``any_size``.

    >>> fake_spatial_shape(["4*n", 32], n=16)
    (64, 32)
    """
    from monai.bundle.scripts import _get_fake_spatial_shape  # MONAI's own reading of "32*n", "2**p"

    return tuple(int(s) for s in _get_fake_spatial_shape(shape, n=n, any=any_size))


def choose_n(shape: list[Any], min_size: int = 64) -> int:
    """The smallest ``n`` that makes every pattern size of ``shape`` >= ``min_size``: a pattern declares every
    multiple valid, and 4x4 is too small for a conditioner that downsamples.

    >>> choose_n(["4*n", "4*n"]), choose_n([584, 565])
    (16, 1)
    """
    for n in range(1, 257):
        sizes = fake_spatial_shape(shape, n=n, any_size=min_size)
        if all(s >= min_size for s, pattern in zip(sizes, shape, strict=True) if isinstance(pattern, str)):
            return n
    return 256


def _build(bundle: Bundle, files: list[Path], tmp: str) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.read_meta(str(bundle.metadata_file))
    for key, value in (("bundle_root", str(bundle.root)), ("output_dir", tmp), ("device", "cpu")):
        if key in parser:
            parser[key] = value
    parser.parse(reset=True)
    if "network_def" not in parser:
        raise KeyError("network_def")
    return parser.get_parsed_content("network_def", instantiate=True)


def _try(name: str, fn: Callable[[], str]) -> Check:
    from monai_cnf.bundle.files import BundleError

    try:
        return Check(name, True, fn())
    except Exception as err:  # each check reports its own failure; the table shows them all
        root = err
        while root.__cause__ is not None:
            root = root.__cause__
        text = str(root) if isinstance(root, BundleError) else f"{type(root).__name__}: {root}"
        return Check(name, False, " ".join(text.split())[:600])


def verify_bundle(bundle: Bundle) -> list[Check]:
    """Run every offline check and return the rows (never raises for a failing check)."""
    import torch

    rows = check_metadata(bundle)
    rows.append(Check("configs parse (JSON)", True, ", ".join(f"{n}.json" for n in sorted(bundle.configs))))
    combos: list[tuple[str, list[Path]]] = []
    if "train" in bundle.configs:
        combos.append(("train.json", bundle.config_files(Workflow.train, "paper", "cnf")))
        if "cpu" in bundle.configs:
            combos.append(("train.json + cpu.json", bundle.config_files(Workflow.train, "cpu", "cnf")))
        if "factored" in bundle.configs:
            combos.append(("train.json + factored.json", bundle.config_files(Workflow.train, "paper", "factored")))
        if "evaluate" in bundle.configs:
            combos.append(("train.json + evaluate.json", bundle.config_files(Workflow.evaluate, "paper", "cnf")))
    if "inference" in bundle.configs:
        combos.append(("inference.json", bundle.config_files(Workflow.inference, "cpu", "cnf")))
        if "inference_paper" in bundle.configs:
            paper = bundle.config_files(Workflow.inference, "paper", "cnf")
            combos.append(("inference.json + inference_paper.json", paper))
    if not combos:
        rows.append(Check("configs present", False, "no train.json or inference.json"))

    nets: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, files in combos:

            def build(label: str = label, files: list[Path] = files) -> str:
                net = _build(bundle, files, tmp)
                nets[label] = net
                n = sum(p.numel() for p in net.parameters()) if isinstance(net, torch.nn.Module) else 0
                return f"{type(net).__name__}, {n:,} parameters"

            rows.append(_try(f"network builds: {label}", build))

    target = nets.get("inference.json") or nets.get("train.json")
    if target is None:
        rows.append(Check("forward pass", False, "no network could be built"))
        return rows
    rows.append(_try("forward pass at the declared shape", lambda: _forward(bundle, target)))
    if "inference" in bundle.configs:
        rows.append(_verify_net_in_out(bundle))
    for kind in ModelKind:
        if bundle.weights(kind).is_file():
            rows.append(_try(f"weights load: models/{bundle.weights(kind).name}", lambda k=kind: _weights(bundle, k)))
    rows.append(check_results(bundle))
    return rows


def _weights(bundle: Bundle, kind: ModelKind) -> str:
    """The shipped weights of ``kind`` in the network of the preset recorded with them."""
    from monai_cnf.bundle.loading import load_trained

    workflow = Workflow.inference if kind is ModelKind.cnf else Workflow.evaluate
    with tempfile.TemporaryDirectory() as tmp:
        trained = load_trained(bundle, checkpoint=bundle.weights(kind), model=kind, workflow=workflow,
                               settings={"output_dir": tmp})  # fmt: skip
    p = trained.provenance
    n = sum(t.numel() for t in trained.network.parameters())
    return (
        f"{type(trained.network).__name__} of {' + '.join(f.name for f in p.network_configs)} ({p.preset} preset, "
        f"{p.recorded_by}), {n:,} parameters"
    )


def _verify_net_in_out(bundle: Bundle) -> Check:
    """MONAI's ``verify_net_in_out`` on ``network_def`` of the shipped weights' inference configs, at the model
    zoo's defaults (``p = n = any = 1``); where those are too small for the network, a warning that says why and
    the smallest ``n`` that passes."""
    import logging

    from monai.bundle import verify_net_in_out

    recorded = bundle.weights_provenance(bundle.weights(ModelKind.cnf))
    overrides = {"bundle_root": str(bundle.root), **dict(recorded.get("overrides") or {})}
    files = [str(f) for f in bundle.config_files(Workflow.inference, recorded.get("preset", "cpu"))]
    shape = bundle.io("inputs", "image").get("spatial_shape") or []
    name = "MONAI verify_net_in_out"
    quiet = logging.getLogger("monai.bundle.scripts")  # its input summary is not news
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        zoo = _try(name, lambda: verify_net_in_out("network_def", str(bundle.metadata_file), files, device="cpu",
                                                   p=1, n=1, any=1, **overrides) or "")  # fmt: skip
        if zoo.ok:
            return Check(name, True, f"spatial_shape {shape} at the model zoo's defaults p = n = any = 1: as declared")
        n = choose_n(shape)
        larger = _try(name, lambda: verify_net_in_out("network_def", str(bundle.metadata_file), files, device="cpu",
                                                      p=1, n=n, any=64, **overrides) or "")  # fmt: skip
    finally:
        quiet.setLevel(level)
    if not larger.ok:
        return larger
    sizes = fake_spatial_shape(shape, n=1, any_size=1)
    return Check(name, False, f"cannot pass at the model zoo's defaults (spatial {sizes}: {zoo.detail}); passes at "
                 f"n={n} (spatial {fake_spatial_shape(shape, n=n)})", warn=True)  # fmt: skip


def _forward(bundle: Bundle, net: Any) -> str:
    import torch

    image, pred = bundle.io("inputs", "image"), bundle.io("outputs", "pred")
    in_shape, out_shape = list(image.get("spatial_shape") or []), list(pred.get("spatial_shape") or [])
    n = choose_n(in_shape)  # one n for input and output ("2*n" -> "4*n" for 2x SR)
    spatial = fake_spatial_shape(in_shape, n=n)
    lo, hi = (image.get("value_range") or [0, 1])[:2]
    x = torch.rand(1, int(image["num_channels"]), *spatial) * (float(hi) - float(lo)) + float(lo)
    net.eval()
    with torch.no_grad():
        y = net(x)
    y = y[0] if isinstance(y, (tuple, list)) else y
    declared = fake_spatial_shape(out_shape, n=n) if out_shape else tuple(y.shape[2:])
    if out_shape:  # "*" declares any size
        pairs = enumerate(zip(declared, out_shape, strict=True))
        declared = tuple(y.shape[2 + i] if p == "*" else d for i, (d, p) in pairs)
    expected = (1, int(pred["num_channels"]), *declared)
    if tuple(y.shape) != expected:
        raise ValueError(f"input {tuple(x.shape)} gave output {tuple(y.shape)}, metadata declares {expected}")
    levels = getattr(net, "num_levels", None)  # the flow works on the target y: its size must divide by 2**L
    if isinstance(levels, int) and any(s % 2**levels for s in declared):
        raise ValueError(f"declared output shape {declared} is not divisible by 2**num_levels = {2**levels}")
    if not torch.isfinite(y).all():
        raise ValueError("the output holds NaN or inf")
    return f"{tuple(x.shape)} -> {tuple(y.shape)}"
