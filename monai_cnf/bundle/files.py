"""A MONAI bundle on disk: its metadata, its JSON configs and its presets, merged by MONAI's own rule.

A *preset* is a list of config files that :class:`monai.bundle.ConfigParser` merges in order (``read_config`` of a
list: later files replace the keys of earlier ones; a nested id such as ``train#batch_size`` needs its parent in an
earlier file). There is no other overlay rule in this project. Only the standard library is imported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = [
    "Bundle", "BundleError", "ModelKind", "Preset", "Split", "Workflow", "check_json", "load_bundle", "preset_value",
]  # fmt: skip


class BundleError(ValueError):
    """A bundle, run folder, override or checkpoint problem; the message names it and says how to fix it.

    Arguments of the library call are written in backticks (``pass `resume```); the CLI shows them as its options
    (``--resume``).
    """


class Preset(str, Enum):
    """Network and schedule sizes. ``auto``: ``cpu`` on a CPU device, ``paper`` on a GPU."""

    auto = "auto"
    cpu = "cpu"
    paper = "paper"

    def resolve(self, device: str) -> Preset:
        """``auto`` -> ``cpu`` on a CPU device, else ``paper``.

        >>> Preset("auto").resolve("cpu").value, Preset("auto").resolve("cuda:0").value
        ('cpu', 'paper')
        """
        if self is Preset.auto:
            return Preset.cpu if str(device) == "cpu" else Preset.paper
        return self


class ModelKind(str, Enum):
    """The model a bundle trains: the conditional normalizing flow or its factored baseline."""

    cnf = "cnf"
    factored = "factored"


class Split(str, Enum):
    """A dataset split of the bundles' ``evaluate.json``."""

    test = "test"
    validation = "validation"
    training = "training"


class Workflow(str, Enum):
    """Which base config a preset overlays: ``train.json``, ``train.json`` + ``evaluate.json`` or ``inference.json``."""

    train = "train"
    evaluate = "evaluate"
    inference = "inference"


#: Shipped weights per model kind, in ``models/``.
BUNDLE_WEIGHTS = {ModelKind.cnf: "model.pt", ModelKind.factored: "model_factored.pt"}
#: Which preset and model made each file of ``models/`` (written next to the weights, read by :meth:`Bundle.weights`).
PROVENANCE_FILE = "provenance.json"


def check_json(path: Path) -> Any:
    """Parse one JSON file; a :class:`BundleError` naming the file, line and column when it does not parse."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise BundleError(f"cannot read {path}: {err.strerror or err}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}.") from None


@dataclass
class Bundle:
    """A bundle folder: ``root/configs/metadata.json`` plus JSON configs and ``models/``.

    Attributes:
        root: absolute path of the bundle folder.
        metadata: the parsed ``configs/metadata.json``.
        configs: config name (file stem) -> path, for every ``configs/*.json`` but the metadata.

    Example:
        >>> import monai_cnf
        >>> b = load_bundle(Path(monai_cnf.__file__).parents[1] / "bundles" / "drive_vessel")
        >>> [p.name for p in b.config_files("train", "cpu", "factored")]
        ['train.json', 'cpu.json', 'factored.json']
        >>> [p.name for p in b.config_files("inference", "paper")]
        ['inference.json', 'inference_paper.json']
    """

    root: Path
    metadata: dict[str, Any]
    configs: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The bundle's folder name (``drive_vessel``), used as the MLflow experiment name."""
        return self.root.name

    @property
    def metadata_file(self) -> Path:
        return self.root / "configs" / "metadata.json"

    def io(self, side: str, key: str) -> dict[str, Any]:
        """``network_data_format.<side>.<key>`` of the metadata (``{}`` when absent), e.g. ``io("inputs", "image")``."""
        return self.metadata.get("network_data_format", {}).get(side, {}).get(key, {}) or {}

    def config(self, name: str, what: str = "") -> Path:
        """Path of ``configs/<name>.json``; a :class:`BundleError` listing the available configs when missing."""
        if name not in self.configs:
            have = ", ".join(sorted(self.configs)) or "none"
            raise BundleError(
                f"bundle {self.root} has no configs/{name}.json{' (' + what + ')' if what else ''}; "
                f"its configs are: {have}."
            )
        return self.configs[name]

    def config_files(
        self, workflow: Workflow | str, preset: Preset | str = Preset.cpu, model: ModelKind | str = ModelKind.cnf
    ) -> list[Path]:
        """The config files MONAI merges, in order, for a workflow, preset and model.

        ``train``: ``train.json`` (the paper preset) [+ ``<preset>.json``] [+ ``factored.json``]; ``evaluate``: the
        same + ``evaluate.json``; ``inference``: ``inference.json`` (the CPU preset's network, the shipped weights')
        [+ ``inference_<preset>.json`` for another preset]. An inference preset file the bundle lacks changes nothing
        (``paper.json`` is optional); ``cpu.json`` and ``factored.json`` must exist when asked for.
        """
        workflow, preset, model = Workflow(workflow), Preset(preset), ModelKind(model)
        if preset is Preset.auto:
            raise BundleError("resolve preset 'auto' against the device first (Preset.resolve(device)).")
        if workflow is Workflow.inference:
            files = [self.config("inference", "the inference config")]
            overlay = f"inference_{preset.value}"
            return files + ([self.configs[overlay]] if preset is not Preset.cpu and overlay in self.configs else [])
        files = [self.config("train", "the training config")]
        if preset is Preset.cpu:
            files.append(self.config("cpu", "the CPU preset overlay"))
        elif preset.value in self.configs:  # train.json is the paper preset; paper.json is optional
            files.append(self.configs[preset.value])
        if model is ModelKind.factored:
            files.append(self.config("factored", "the factored-baseline overlay"))
        if workflow is Workflow.evaluate:
            files.append(self.config("evaluate", "the evaluation overlay"))
        return files

    def weights(self, model: ModelKind | str = ModelKind.cnf) -> Path:
        """The shipped weights of ``model`` (``models/model.pt`` or ``models/model_factored.pt``; may not exist)."""
        return self.root / "models" / BUNDLE_WEIGHTS[ModelKind(model)]

    def weights_provenance(self, checkpoint: Path) -> dict[str, Any]:
        """What ``provenance.json`` next to a weights file records for it, else ``{}``: ``{"preset", "model"}`` and
        optionally ``"overrides"`` (config keys the weights were trained with on top of the preset)."""
        record = Path(checkpoint).parent / PROVENANCE_FILE
        if not record.is_file():
            return {}
        entry = check_json(record).get(Path(checkpoint).name, {})
        return dict(entry) if isinstance(entry, dict) else {}

    def record_weights(
        self,
        checkpoint: Path,
        preset: Preset | str,
        model: ModelKind | str,
        overrides: dict[str, Any] | None = None,
    ) -> Path:
        """Record in ``provenance.json`` next to ``checkpoint`` which preset (and overrides) and model kind made it."""
        record = Path(checkpoint).parent / PROVENANCE_FILE
        data = check_json(record) if record.is_file() else {}
        entry: dict[str, Any] = {"preset": Preset(preset).value, "model": ModelKind(model).value}
        if overrides:
            entry["overrides"] = dict(overrides)
        data[Path(checkpoint).name] = entry
        tmp = record.with_name(f".{record.name}.tmp")
        tmp.write_text(json.dumps(data, indent=4) + "\n")
        tmp.replace(record)
        return record


def load_bundle(path: Path | str) -> Bundle:
    """Check that ``path`` is a MONAI bundle and that every ``configs/*.json`` parses.

    Raises:
        BundleError: the path is missing, is a file, has no ``configs/metadata.json``, or a config is invalid JSON.
    """
    root = Path(path).expanduser().absolute()
    example = "a bundle is a folder with configs/metadata.json and configs/train.json, e.g. bundles/drive_vessel"
    if not root.exists():
        raise BundleError(f"{path} does not exist; {example}.")
    if not root.is_dir():
        raise BundleError(f"{path} is a file, not a MONAI bundle; {example}.")
    meta = root / "configs" / "metadata.json"
    if not meta.is_file():
        raise BundleError(f"{path} is not a MONAI bundle: no configs/metadata.json; {example}.")
    metadata = check_json(meta)
    if not isinstance(metadata, dict):
        raise BundleError(f"{meta}: metadata must be a JSON object, got {type(metadata).__name__}.")
    configs: dict[str, Path] = {}
    for p in sorted((root / "configs").glob("*.json")):
        if p.name == "metadata.json":
            continue
        if not isinstance(check_json(p), dict):
            raise BundleError(f"{p}: a bundle config must be a JSON object.")
        configs[p.stem] = p
    return Bundle(root=root, metadata=metadata, configs=configs)


def preset_value(bundle_root: str | Path, preset: Preset | str, key: str) -> Any:
    """The value of ``key`` in a training preset (``train.json`` [+ ``cpu.json``]), resolved by MONAI's parser.

    ``inference.json`` takes its network sizes from here (``"num_steps": "$monai_cnf.bundle.preset_value(
    @bundle_root, @preset, 'num_steps')"``), so no network size is written in two files and the standalone inference
    network is always the one the preset trains. Keys must resolve without instantiating anything (numbers,
    strings, lists, ``null``).

    Args:
        bundle_root: the bundle folder (``@bundle_root``: relative paths are relative to the working directory, as
            for MONAI's runner).
        preset: ``"cpu"`` (``train.json`` + ``cpu.json``) or ``"paper"`` (``train.json``).
        key: the config id, e.g. ``"hidden_channels"`` or ``"train#batch_size"``.

    Example:
        >>> import monai_cnf
        >>> root = Path(monai_cnf.__file__).parents[1] / "bundles" / "drive_vessel"
        >>> preset_value(root, "cpu", "num_steps"), preset_value(root, "paper", "num_steps")
        (4, 8)
    """
    parser = _preset_parser(str(Path(bundle_root).resolve()), Preset(preset).value)
    if key not in parser:
        raise BundleError(f"the {preset} preset of {bundle_root} has no key {key!r}.")
    return parser.get_parsed_content(key)


_PRESET_PARSERS: dict[tuple[str, str], Any] = {}


def _preset_parser(root: str, preset: str) -> Any:
    """A cached ``ConfigParser`` of a training preset (MONAI imported only when one is asked for)."""
    if (root, preset) not in _PRESET_PARSERS:
        from monai.bundle import ConfigParser

        bundle = load_bundle(root)
        if preset == Preset.auto.value:
            raise BundleError("`preset` must be 'cpu' or 'paper' here, not 'auto'.")
        parser = ConfigParser()
        parser.read_config([str(p) for p in bundle.config_files(Workflow.train, Preset(preset))])
        parser.update({"bundle_root": root})
        _PRESET_PARSERS[(root, preset)] = parser
    return _PRESET_PARSERS[(root, preset)]
