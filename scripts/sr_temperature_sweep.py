"""The paper's Fig. 3 for the super-resolution bundle: CNF samples at several temperatures beside the factored
baseline, on one HR image (e.g. Set14's baboon), each panel labelled with its PSNR-Y.

The HR image goes through the bundle's own evaluation transforms (mod-crop to the scale, MATLAB-style bicubic
LR), so the LR input is exactly what ``cnf evaluate`` scores. Every panel is one 8-bit sample of the model (the
temperature-0 panels are the deterministic decodes), never an average.

Example:
    python scripts/sr_temperature_sweep.py --hr ../shared/data/sr_benchmark/Set14/baboon.png \\
        --cnf-run runs/sr_cnf --factored-run runs/sr_factored --output bundles/super_resolution/docs/figures/fig3.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "super_resolution"


def _trained(run_dir: Path | None, model: str, overrides: list[str]):
    from monai_cnf.bundle.loading import load_trained

    settings = {"split": "test", "val_crop": [-1, -1], "bpd_num_crops": 0}
    return load_trained(BUNDLE, run_dir, model=model, workflow="evaluate", settings=settings, overrides=overrides)


def _pair(trained, hr: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR) as ``cnf evaluate`` makes them: LR in [0, 1] ``(1, 3, h, w)``, HR grey levels ``(1, 3, H, W)``."""
    item = trained.parser.get_parsed_content("validate#preprocessing")({"label": str(hr)})
    return torch.as_tensor(item["image"])[None].float(), torch.as_tensor(item["label"])[None].float()


def _sample(trained, lr: torch.Tensor, temperature: float, seed: int) -> torch.Tensor:
    from monai_cnf.engines import SampleInferer

    generator = torch.Generator().manual_seed(seed)
    inferer = SampleInferer(num_samples=1, temperature=temperature, pad_to_divisor=True, generator=generator)
    return inferer(lr, trained.network)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hr", type=Path, required=True, help="HR image (e.g. Set14/baboon.png).")
    parser.add_argument("--cnf-run", type=Path, default=None, help="CNF run folder (default: shipped weights).")
    parser.add_argument("--factored-run", type=Path, default=None, help="Factored run folder (default: shipped).")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--crop", type=int, nargs=4, default=None, metavar=("TOP", "LEFT", "H", "W"),
                        help="HR region to show (default: the whole image).")  # fmt: skip
    parser.add_argument("--cnf-override", action="append", default=[], metavar="KEY=VALUE",
                        help="Config override of the CNF (repeatable), e.g. for weights outside a cnf train run.")
    parser.add_argument("--factored-override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monai_cnf.metrics.image import psnr_y

    cnf = _trained(args.cnf_run, "cnf", args.cnf_override)
    factored = _trained(args.factored_run, "factored", args.factored_override)
    lr, hr = _pair(cnf, args.hr)
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
    bicubic = (bicubic * 255).round().clamp(0, 255)
    panels = [("LR (input)", torch.nn.functional.interpolate(lr * 255, scale_factor=2, mode="nearest")),
              ("bicubic", bicubic)]  # fmt: skip
    with torch.no_grad():
        for t in args.temperatures:
            panels.append((f"CNF, τ = {t:g}", _sample(cnf, lr, t, args.seed)))
        panels.append(("factored, mode", _sample(factored, lr, 0.0, args.seed)))
        panels.append(("factored, sample τ = 1", _sample(factored, lr, 1.0, args.seed)))
    panels.append(("HR (ground truth)", hr))

    top, left, h, w = args.crop or (0, 0, hr.shape[-2], hr.shape[-1])
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (title, img) in zip(axes, panels, strict=True):
        label = title
        if not title.startswith(("LR", "HR")):
            label += f"\n{float(psnr_y(img, hr, crop_border=2)):.2f} dB"
        shown = img[0, :, top : top + h, left : left + w].permute(1, 2, 0).numpy().astype(np.uint8)
        ax.imshow(shown, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(args.output)
    return args.output


if __name__ == "__main__":
    main()
