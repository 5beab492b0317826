"""Finding a bundle, checking its JSON, choosing its config files and overrides, building MONAI's ConfigWorkflow.

Only the standard library is imported at module level; MONAI is imported by the functions that need it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_cnf.cli._errors import CLIError

__all__ = [
    "Bundle",
    "check_json",
    "compose_config_files",
    "export_config",
    "load_bundle",
    "make_workflow",
    "missing_keys",
    "parse_overrides",
    "resolve_device",
    "resolve_preset",
]


@dataclass
class Bundle:
    """A bundle folder: ``root/configs/metadata.json`` plus JSON configs.

    Attributes:
        root: absolute path of the bundle folder.
        metadata: the parsed ``configs/metadata.json``.
        configs: config name (file stem) -> path, for every ``configs/*.json`` but the metadata.
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

    def config(self, name: str, what: str = "") -> Path:
        """Path of ``configs/<name>.json``; a ``CLIError`` listing the available configs when it is missing."""
        if name not in self.configs:
            have = ", ".join(sorted(self.configs)) or "none"
            raise CLIError(
                f"bundle {self.root} has no configs/{name}.json{' (' + what + ')' if what else ''}; "
                f"its configs are: {have}."
            )
        return self.configs[name]


def check_json(path: Path) -> Any:
    """Parse one JSON file; a ``CLIError`` naming the file, line and column when it does not parse."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CLIError(f"cannot read {path}: {err.strerror or err}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CLIError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}.") from None


def load_bundle(path: Path | str) -> Bundle:
    """Check that ``path`` is a MONAI bundle and that every ``configs/*.json`` parses.

    Raises:
        CLIError: the path is missing, is a file, has no ``configs/metadata.json``, or a config is invalid JSON.
    """
    root = Path(path).expanduser().absolute()
    example = "a bundle is a folder with configs/metadata.json and configs/train.json, e.g. bundles/drive_vessel"
    if not root.exists():
        raise CLIError(f"{path} does not exist; {example}.")
    if not root.is_dir():
        raise CLIError(f"{path} is a file, not a MONAI bundle; {example}.")
    meta = root / "configs" / "metadata.json"
    if not meta.is_file():
        raise CLIError(f"{path} is not a MONAI bundle: no configs/metadata.json; {example}.")
    metadata = check_json(meta)
    if not isinstance(metadata, dict):
        raise CLIError(f"{meta}: metadata must be a JSON object, got {type(metadata).__name__}.")
    configs: dict[str, Path] = {}
    for p in sorted((root / "configs").glob("*.json")):
        if p.name == "metadata.json":
            continue
        content = check_json(p)
        if not isinstance(content, dict):
            raise CLIError(f"{p}: a bundle config must be a JSON object, got {type(content).__name__}.")
        configs[p.stem] = p
    return Bundle(root=root, metadata=metadata, configs=configs)


def resolve_device(device: str | None) -> str:
    """``device`` as given, else ``"cuda"`` when a GPU is available, else ``"cpu"``; checks CUDA requests."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: CUDA is not available on this machine; use --device cpu.")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise CLIError(f"--device must be cpu, cuda or cuda:N, got {device!r}.")
    return device


def resolve_preset(preset: str, device: str) -> str:
    """``auto`` -> ``cpu`` on a CPU device, ``paper`` on a GPU."""
    if preset == "auto":
        return "cpu" if device == "cpu" else "paper"
    return preset


def compose_config_files(bundle: Bundle, workflow: str, preset: str, model: str) -> list[Path]:
    """The bundle config files merged, in order, for a workflow.

    ``train``: ``train.json`` [+ ``cpu.json`` | ``paper.json``] [+ ``factored.json``];
    ``evaluate``: the same + ``evaluate.json``; ``inference``: ``inference.json`` (the network of the shipped
    weights, the CPU preset's) [+ ``inference_paper.json`` for ``paper`` when the bundle has it].
    ``paper.json`` is optional (``train.json`` is the paper preset); ``cpu.json`` and ``factored.json`` must exist
    when asked for.
    """
    if workflow == "inference":
        files = [bundle.config("inference", "needed by cnf sample")]
        if preset == "paper" and "inference_paper" in bundle.configs:
            files.append(bundle.configs["inference_paper"])
        return files
    files = [bundle.config("train", "the training config")]
    if preset == "cpu":
        files.append(bundle.config("cpu", "the CPU preset overlay, --preset cpu"))
    elif preset == "paper" and "paper" in bundle.configs:
        files.append(bundle.configs["paper"])
    if model == "factored":
        files.append(bundle.config("factored", "the factored-baseline overlay, --model factored"))
    if workflow == "evaluate":
        files.append(bundle.config("evaluate", "needed by cnf evaluate"))
    return files


def parse_overrides(items: Iterable[str] | None) -> dict[str, Any]:
    """``key=value`` strings -> overrides, MONAI style: values are JSON when they parse, else strings.

    Keys use MONAI's ``#`` (or ``::``) separator, e.g. ``train#dataloader#batch_size=4``.

    >>> parse_overrides(["a#b=4", "c=[1, 2]", "d=hello", "e=null"])
    {'a#b': 4, 'c': [1, 2], 'd': 'hello', 'e': None}
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--override expects key=value (e.g. train#dataloader#batch_size=4), got {item!r}.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def make_workflow(
    bundle: Bundle,
    config_files: Sequence[Path],
    overrides: Mapping[str, Any],
    workflow_type: str | None = None,
) -> Any:
    """A ``monai.bundle.ConfigWorkflow`` over ``config_files`` with ``overrides``, checked for missing keys.

    Every top-level key the CLI sets must already exist in the merged config (the contract between the bundles and
    the CLI); a user ``--override`` may add new keys, as MONAI allows.
    """
    import logging

    from monai.bundle import ConfigWorkflow

    quiet = logging.getLogger("monai.bundle.workflows")  # "Logging file is set to False" is not news
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return ConfigWorkflow(
            config_file=[str(p) for p in config_files],
            meta_file=str(bundle.metadata_file),
            logging_file=False,
            workflow_type=workflow_type,
            **dict(overrides),
        )
    finally:
        quiet.setLevel(level)


def missing_keys(workflow: Any, keys: Iterable[str]) -> list[str]:
    """The ``keys`` absent from a workflow's merged config (before the CLI's overrides were applied)."""
    return [k for k in keys if k not in workflow.parser]


def export_config(workflow: Any, path: Path) -> Path:
    """Write the merged, overridden config (MONAI's "executed config") as JSON; never overwrites a file."""
    from monai.bundle import ConfigParser

    path = Path(path)
    if path.exists():
        stem, i = path.stem, 1
        while path.exists():
            path = path.with_name(f"{stem}.{i}.json")
            i += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    ConfigParser.export_config_file(workflow.parser.get(), str(path), indent=2)
    return path
