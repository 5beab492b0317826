"""One path from a bundle (and a run folder) to a trained model: :func:`load_trained`.

The network is built from the config that made its weights: a run folder's resolved ``config.json`` (or its newest
``config_resume.N.json``) when the weights come from that run, else the bundle's configs for the preset recorded
with the weights (``models/provenance.json``), else the preset asked for. Weights that do not fit give one line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai_cnf.bundle.files import Bundle, BundleError, ModelKind, Preset, Workflow, load_bundle
from monai_cnf.bundle.overrides import check_overrides, parse_overrides
from monai_cnf.bundle.run_folder import RunFolder

if TYPE_CHECKING:
    from monai.bundle import ConfigParser

    from monai_cnf.networks.base import ConditionalLikelihoodModel

__all__ = [
    "Provenance",
    "Trained",
    "WeightsMismatchError",
    "find_weights",
    "load_trained",
    "load_weights",
    "make_parser",
    "read_weights",
    "resolve_device",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

#: Keys under which trainer checkpoints (MONAI's ``CheckpointSaver`` ``save_dict``) hold the network's state_dict.
STATE_DICT_KEYS = ("network", "model", "net", "state_dict")


def resolve_device(device: str | None) -> str:
    """``device`` as given, else ``"cuda"`` when a GPU is available, else ``"cpu"``; checks CUDA requests."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BundleError(f"device {device}: CUDA is not available on this machine; use cpu.")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise BundleError(f"device must be cpu, cuda or cuda:N, got {device!r}.")
    return device


class WeightsMismatchError(BundleError):
    """A checkpoint whose tensors do not fit the network it is loaded into."""


def unwrap_state_dict(obj: Any) -> Mapping[str, Any]:
    """A plain ``state_dict`` from a plain one (``models/model.pt``) or a trainer checkpoint (``{"network": ...}``).

    >>> unwrap_state_dict({"network": {"w": 1}, "optimizer": {}})
    {'w': 1}
    >>> unwrap_state_dict({"w": 1})
    {'w': 1}
    """
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                return obj[key]
    return obj


def read_weights(checkpoint: Path) -> Mapping[str, Any]:
    """The network ``state_dict`` of a checkpoint file; one clear line when it is missing, truncated or corrupt."""
    from monai_cnf.engines.checkpoint import CorruptCheckpointError, load_checkpoint

    try:
        return unwrap_state_dict(load_checkpoint(checkpoint, map_location="cpu"))
    except (FileNotFoundError, CorruptCheckpointError) as err:
        raise BundleError(str(err)) from None


def load_weights(
    network: Any,
    weights: Path | Mapping[str, Any],
    source: str,
    name: str = "",
    fix: str = "give the `run_dir` they were trained in, or the `preset` that made them",
) -> None:
    """Load weights into ``network``; a one-line :class:`WeightsMismatchError` when they do not fit.

    Args:
        network: the ``torch.nn.Module``.
        weights: a ``.pt`` file (plain state_dict or trainer checkpoint) or a state_dict.
        source: what the network was built from, for the message (e.g. ``"inference.json"``).
        name: what the weights are, for the message. Defaults to the file name.
        fix: what the message tells the user to do.
    """
    state = read_weights(weights) if isinstance(weights, str | Path) else weights
    name = name or str(weights if isinstance(weights, str | Path) else "the weights")
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        example = shapes[0] if shapes else (missing or unexpected)[0]
        raise WeightsMismatchError(
            f"{name} does not fit the {type(network).__name__} of {source}: {len(shapes)} tensor(s) of another "
            f"shape, {len(missing)} missing, {len(unexpected)} unexpected (e.g. {example}); the weights were made by "
            f"another preset or model: {fix}."
        )
    network.load_state_dict(state)


def make_parser(
    bundle: Bundle,
    files: Sequence[Path],
    settings: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
) -> ConfigParser:
    """A MONAI ``ConfigParser`` of ``files`` (merged by MONAI's rule) with the bundle's metadata.

    ``settings`` (the keys a caller sets: ``bundle_root``, ``device``, ...) are applied as given; user ``overrides``
    (``key=value`` strings or a mapping) are first checked with :func:`check_overrides`, so an unknown key or a value
    of the wrong type fails here, before any work starts.
    """
    from monai.bundle import ConfigParser

    user = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.read_meta(str(bundle.metadata_file))
    check_overrides(parser.get(), user, source=" + ".join(Path(f).name for f in files))
    parser.update({**dict(settings or {}), **user})
    return parser


@dataclass
class Provenance:
    """Where a trained model came from.

    Attributes:
        checkpoint: the weights file.
        network_configs: the configs its network was built from (a run's resolved config or the bundle's).
        preset: the preset that made the weights (None when nothing records it).
        model: ``"cnf"`` or ``"factored"``.
        run_dir: the training run folder of the weights, if any.
        recorded_by: what told the preset: ``"run folder"``, ``"models/provenance.json"`` or ``"requested"``.
    """

    checkpoint: Path
    network_configs: list[Path]
    preset: str | None
    model: str
    run_dir: Path | None = None
    recorded_by: str = "requested"

    def describe(self) -> dict[str, str]:
        """Rows for a table."""
        return {
            "checkpoint": str(self.checkpoint),
            "network": " + ".join(str(p) for p in self.network_configs),
            "preset / model": f"{self.preset or '?'} / {self.model} ({self.recorded_by})",
        }


@dataclass
class Trained:
    """A network in eval mode with its weights, the workflow's parser, and the provenance of both."""

    network: ConditionalLikelihoodModel
    parser: ConfigParser
    provenance: Provenance
    files: list[Path] = field(default_factory=list)


def _model_kind(config: Path) -> str | None:
    """The ``model_kind`` key of a resolved config (runs written before ``provenance.json`` existed)."""
    import json

    try:
        value = json.loads(Path(config).read_text()).get("model_kind")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value in ("cnf", "factored") else None


def find_weights(
    bundle: Bundle, run_dir: Path | None, checkpoint: Path | None, model: ModelKind | str = ModelKind.cnf
) -> tuple[Path, RunFolder | None]:
    """The weights to use and the run folder they belong to: ``checkpoint``; else the run folder's
    (:meth:`RunFolder.checkpoint`); else the bundle's shipped ``models/`` file for ``model``."""
    run = RunFolder(run_dir) if run_dir is not None else None
    if checkpoint is not None:
        ckpt = Path(checkpoint).expanduser().absolute()
        if not ckpt.is_file():
            raise BundleError(f"checkpoint {ckpt} does not exist; fix the path or train first (cnf train).")
        inside = run is not None and run.root in ckpt.parents
        return ckpt, run if inside else None
    found = run.checkpoint() if run is not None else None
    if found is not None:
        return found, run
    shipped = bundle.weights(model)
    if shipped.is_file():
        return shipped, None
    where = f"no checkpoint in {run.root}/models or {run.root}/checkpoints and " if run is not None else ""
    kind = ModelKind(model).value
    train = f"cnf train {bundle.root}" + (" --model factored" if kind == "factored" else "")
    raise BundleError(f"no {kind} weights: {where}no {shipped}; train them first ({train}) or give a checkpoint file.")


def load_trained(
    bundle: Bundle | Path | str,
    run_dir: Path | None = None,
    checkpoint: Path | None = None,
    preset: Preset | str | None = None,
    device: str = "cpu",
    model: ModelKind | str = ModelKind.cnf,
    workflow: Workflow | str = Workflow.inference,
    settings: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
) -> Trained:
    """The trained network (eval mode, on ``device``), the workflow's parser and where each came from.

    Args:
        bundle: a :class:`Bundle` or its folder.
        run_dir: a ``cnf train`` run folder; its weights and resolved config win. Defaults to None.
        checkpoint: a weights file; None takes the run folder's, else the bundle's ``models/``. Defaults to None.
        preset: the preset of weights that record none; None: the recorded one, else ``auto`` for ``device``.
        device: torch device string. Defaults to "cpu".
        model: ``"cnf"`` or ``"factored"`` (weights outside a run folder). Defaults to "cnf".
        workflow: ``"inference"`` (``inference.json``) or ``"evaluate"`` (``train.json`` + ``evaluate.json``).
        settings: keys the caller sets (``output_dir``, ``split``, ...), applied unchecked. Defaults to None.
        overrides: user ``key=value`` overrides, checked before anything is built. Defaults to ().

    Raises:
        BundleError: no weights, an unknown or mistyped override, or weights that do not fit (one line each).

    Example:
        >>> import monai_cnf
        >>> trained = load_trained(Path(monai_cnf.__file__).parents[1] / "bundles" / "drive_vessel")
        >>> trained.network.task.value, trained.provenance.preset, trained.provenance.recorded_by
        ('segmentation', 'cpu', 'models/provenance.json')
    """
    from monai_cnf.networks.base import ConditionalLikelihoodModel

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    workflow = Workflow(workflow)
    ckpt, run = find_weights(bundle, run_dir, checkpoint, model)
    state = read_weights(ckpt)  # a truncated file fails here, before anything is built
    base = {"bundle_root": str(bundle.root), "device": device, **dict(settings or {})}
    trained_config = run.trained_config() if run is not None else None
    trained_with: dict[str, Any] = {}
    if run is not None and trained_config is not None:
        recorded = run.provenance()
        kind = recorded.get("model") or _model_kind(trained_config) or ModelKind(model).value
        if kind != ModelKind(model).value:
            raise BundleError(
                f"{run.root} holds a {kind!r} training run, not a {ModelKind(model).value!r} one; give it as the "
                f"{kind} run folder instead."
            )
        chosen = recorded.get("preset")
        net_files, how = [trained_config], "run folder"
    else:
        recorded = bundle.weights_provenance(ckpt)
        kind = str(recorded.get("model", ModelKind(model).value))
        chosen = (Preset(preset).value if preset is not None else None) or recorded.get("preset")
        if chosen == recorded.get("preset"):  # the keys the weights were trained with on top of their preset
            trained_with = dict(recorded.get("overrides") or {})
        how = "requested" if preset is not None else ("models/provenance.json" if chosen else "device default")
        chosen = chosen or Preset.auto.resolve(device).value
        net_files = bundle.config_files(workflow if workflow is Workflow.evaluate else Workflow.inference, chosen, kind)
    if workflow is Workflow.evaluate:
        files = [*net_files, bundle.config("evaluate")] if how == "run folder" else net_files
    else:
        files = bundle.config_files(Workflow.inference, Preset(chosen) if chosen else Preset.cpu)
    parser = make_parser(bundle, files, {**base, **trained_with}, overrides)
    if files == net_files or (workflow is Workflow.evaluate and how == "run folder"):
        net_parser = parser
    else:  # inference with a run's weights: the network as trained, the rest as inference.json says
        net_parser = make_parser(bundle, net_files, {"bundle_root": str(bundle.root), "device": device})
    network = net_parser.get_parsed_content("network_def", instantiate=True)
    if not isinstance(network, ConditionalLikelihoodModel):
        raise BundleError(f"network_def of {net_files[0].name} is a {type(network).__name__}, not a monai_cnf model.")
    load_weights(network, state, " + ".join(p.name for p in net_files), str(ckpt))
    provenance = Provenance(ckpt, list(net_files), chosen, kind, run.root if run is not None else None, how)
    logger.debug("loaded %s (%s preset, %s)", ckpt, chosen, how)
    return Trained(network.to(device).eval(), parser, provenance, list(files))
