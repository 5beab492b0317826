"""Ship a training run's weights in its bundle: ``models/model.pt`` (CNF) or ``models/model_factored.pt``.

Copies the run's best weights (``<run>/models/model.pt``, chosen on the validation split) over the bundle's file
for the run's model kind, updates that file's sha256 in ``large_files.yml`` and its entry in
``models/provenance.json`` (preset and model from the run's ``provenance.json``, and the config keys the run's network
was built with where they differ from that preset's, e.g. ``conditioner=unet``, so that the bundle builds the same
network for these weights), and prints the digest that
``metadata.json`` ``eval_metrics_weights`` must hold once the results of these weights are recorded
(``cnf bundle verify`` warns until then).

    python scripts/ship_weights.py runs/drive_cnf bundles/drive_vessel
    python scripts/ship_weights.py runs/drive_factored bundles/drive_vessel --final
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from monai_cnf.bundle.files import Bundle, ModelKind, load_bundle
from monai_cnf.bundle.loading import make_parser
from monai_cnf.bundle.run_folder import RunFolder

_REFERENCE = re.compile(r"@([A-Za-z_][\w#]*)")
# settings of how the network runs, not of what it is: the bundle's own value stays
_RUNTIME_KEYS = {"use_checkpoint", "device", "torch_device"}
# settings outside the network that change what it sees (the input preprocessing): weights trained with them need them
_INPUT_KEYS = ("equalize_contrast",)
_MISSING = object()


def _lookup(config: Any, key: str) -> Any:
    """``config[key]`` for a ``#``-separated key (list items by index), else ``_MISSING``."""
    for part in key.split("#"):
        if isinstance(config, dict) and part in config:
            config = config[part]
        elif isinstance(config, list) and part.isdigit() and int(part) < len(config):
            config = config[int(part)]
        else:
            return _MISSING
    return config


def network_overrides(trained: dict[str, Any], preset: dict[str, Any], key: str = "network_def") -> dict[str, Any]:
    """The config keys that ``key`` (the network) depends on whose value in ``trained`` differs from ``preset``.

    Both are raw (unresolved) MONAI configs. References (``@name``, also inside ``$`` expressions) are followed, so a
    run started with ``-o conditioner=unet`` gives ``{"conditioner": "unet"}``; a leaf of the network's own
    definition that was overridden (``network_def#hidden_channels``) is given by its ``#`` path.

    Example:
        >>> preset = {"width": 8, "network_def": {"_target_": "Net", "width": "@width", "depth": 2}}
        >>> network_overrides({**preset, "width": 16}, preset)
        {'width': 16}
    """
    found: dict[str, Any] = {}
    seen: set[str] = set()

    def visit(path: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                visit(f"{path}#{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                visit(f"{path}#{i}", v)
        elif isinstance(value, str) and value.startswith(("@", "$")) and value == _lookup(preset, path):
            for name in _REFERENCE.findall(value):
                if name not in seen and name.split("#")[0] not in _RUNTIME_KEYS:
                    seen.add(name)
                    target = _lookup(trained, name)
                    if target is not _MISSING and target != _lookup(preset, name):
                        found[name] = target
                    elif target is not _MISSING:
                        visit(name, target)
        elif value != _lookup(preset, path) and path.split("#")[-1] not in _RUNTIME_KEYS:
            found[path] = value

    visit(key, _lookup(trained, key))
    return found


def _preset_config(bundle: Bundle, preset: str, model: str) -> dict[str, Any]:
    """The bundle's training config for ``preset`` and ``model``, merged the way MONAI merges it."""
    return make_parser(bundle, bundle.config_files("train", preset, model)).get()


def ship(run_dir: Path, bundle_dir: Path, final: bool = False) -> Path:
    """Copy the run's weights into the bundle and update its hashes and provenance; returns the bundle file."""
    run = RunFolder(run_dir)
    made = run.provenance()
    if "model" not in made or "preset" not in made:
        raise SystemExit(f"{run_dir}/provenance.json does not say which preset and model made the weights")
    source = run_dir / "models" / ("model_final.pt" if final else "model.pt")
    if not source.is_file():
        raise SystemExit(f"{source} does not exist: train first (or pass --final for the last weights)")
    bundle = load_bundle(bundle_dir)
    target = bundle.weights(ModelKind(made["model"]))
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()

    rel = target.relative_to(bundle.root).as_posix()
    listing = bundle.root / "large_files.yml"
    text = listing.read_text()
    entry = re.compile(rf'(- path: "{re.escape(rel)}"\s*\n\s*hash_val: ")[0-9a-f]*(")')
    if not entry.search(text):
        raise SystemExit(f"{listing} has no entry for {rel}")
    listing.write_text(entry.sub(rf"\g<1>{digest}\g<2>", text))

    trained = run.trained_config()
    overrides = {}
    if trained is not None:  # a run folder without its config: the preset's network, as before
        trained_config = json.loads(trained.read_text())
        preset_config = _preset_config(bundle, made["preset"], made["model"])
        overrides = network_overrides(trained_config, preset_config)
        for name in _INPUT_KEYS:
            value = _lookup(trained_config, name)
            if value is not _MISSING and value != _lookup(preset_config, name):
                overrides[name] = value
    bundle.record_weights(target, made["preset"], made["model"], overrides)
    print(f"{source} -> {target}\nsha256 {digest}\neval_metrics_weights (CNF): {digest[:12]}")
    if overrides:
        print(f"recorded with the run's network settings: {overrides}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("bundle_dir", type=Path)
    parser.add_argument("--final", action="store_true", help="ship model_final.pt instead of the best weights")
    args = parser.parse_args()
    ship(args.run_dir, args.bundle_dir, args.final)


if __name__ == "__main__":
    main()
