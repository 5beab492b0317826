"""The picture ``make demo`` ends with: one test image, CNF samples, their mean and std, and the PR curve.

``python -m monai_cnf.bundle.demo RUN_DIR [--bundle B] [--num-samples N]`` loads the run's weights with
:func:`~monai_cnf.bundle.load_trained`, samples the first image of the run's DRIVE-layout test split (the synthetic
set ``cnf train`` generated, or ``dataset_dir``), and writes ``RUN_DIR/demo.png``; it prints the picture's path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["demo_figure"]


def demo_figure(bundle: Path, run_dir: Path, num_samples: int = 16, seed: int = 0, device: str = "cpu") -> Path:
    """Write ``run_dir/demo.png``: image | 2 samples | mean | std | PR curve (mean of ``num_samples``, inside FOV).

    Returns:
        the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from monai.transforms import Compose, DivisiblePadd

    from monai_cnf.bundle.files import load_bundle
    from monai_cnf.bundle.loading import load_trained, make_parser
    from monai_cnf.data import drive_datalist, drive_load_transforms
    from monai_cnf.engines import SampleInferer
    from monai_cnf.metrics import max_f_score, pr_curve

    trained = load_trained(bundle, run_dir, device=device)
    config = trained.provenance.network_configs[0]  # the run's resolved config: its data (synthetic set or DRIVE)
    root = make_parser(load_bundle(bundle), [config], {"bundle_root": str(Path(bundle).absolute())})
    root = root.get_parsed_content("data_root")
    item = drive_datalist(root, "test", second_observer=False)[0]
    data = Compose(drive_load_transforms(["image", "label", "mask"]))(dict(item))
    h, w = data["image"].shape[1:]
    padded = DivisiblePadd(["image"], k=trained.network.divisor)({"image": data["image"]})["image"]
    inferer = SampleInferer(num_samples, 1.0, return_std=True, return_samples=True,
                            generator=torch.Generator(device=device).manual_seed(seed))  # fmt: skip
    out = inferer(torch.as_tensor(padded)[None].float().to(device), trained.network)
    top, left = (padded.shape[1] - h) // 2, (padded.shape[2] - w) // 2  # DivisiblePad pads symmetrically

    def crop(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()[..., top : top + h, left : left + w]

    samples, mean, std = crop(out["samples"][:, 0, 0]), crop(out["pred"][0, 0]), crop(out["std"][0, 0])
    label, mask = np.asarray(data["label"][0]) > 0.5, np.asarray(data["mask"][0]) > 0.5
    precision, recall, _ = pr_curve(mean, label, mask)
    best = max_f_score(mean, label, mask)
    fig, axes = plt.subplots(1, 6, figsize=(21, 3.8))
    panels = [
        (np.moveaxis(np.asarray(data["image"]), 0, -1), "image x"),
        (samples[0], "sample 1"),
        (samples[1 % len(samples)], "sample 2"),
        (mean, f"mean of {num_samples} samples"),
        (std, "std"),
    ]
    for ax, (img, title) in zip(axes[:5], panels, strict=True):
        ax.imshow(np.clip(img, 0, 1), cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1 if title != "std" else 0.5)
        ax.set_title(title)
        ax.axis("off")
    axes[5].plot(recall, precision)
    title = f"PR curve inside the FOV (max F {best.f_score:.3f})"
    axes[5].set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1), title=title)
    fig.suptitle(f"{Path(item['image']).name}: {trained.provenance.checkpoint}", fontsize=9)
    path = Path(run_dir) / "demo.png"
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--bundle", type=Path, default=Path("bundles/drive_vessel"))
    parser.add_argument("--num-samples", type=int, default=16)
    args = parser.parse_args(argv)
    print(demo_figure(args.bundle, args.run_dir, args.num_samples))


if __name__ == "__main__":
    main()
