"""Ship a training run's weights in its bundle: ``models/model.pt`` (CNF) or ``models/model_factored.pt``.

Copies the run's best weights (``<run>/models/model.pt``, chosen on the validation split) over the bundle's file
for the run's model kind, updates that file's sha256 in ``large_files.yml`` and its entry in
``models/provenance.json`` (preset and model from the run's ``provenance.json``), and prints the digest that
``metadata.json`` ``eval_metrics_weights`` must hold once the results of these weights are recorded
(``cnf bundle verify`` warns until then).

    python scripts/ship_weights.py runs/drive_cnf bundles/drive_vessel
    python scripts/ship_weights.py runs/drive_factored bundles/drive_vessel --final
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
from pathlib import Path

from monai_cnf.bundle.files import ModelKind, load_bundle
from monai_cnf.bundle.run_folder import RunFolder


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

    bundle.record_weights(target, made["preset"], made["model"])
    print(f"{source} -> {target}\nsha256 {digest}\neval_metrics_weights (CNF): {digest[:12]}")
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
