"""Bicubic upsampling scored exactly as ``cnf evaluate`` scores the super-resolution models.

Each HR image of a folder goes through the bundle's evaluation transforms (mod-crop to the scale, MATLAB-style
bicubic LR); the LR image is upsampled by MATLAB-style bicubic interpolation (``imresize``), rounded to 8 bits,
and scored with PSNR-Y / SSIM-Y (BT.601, border = scale), the bundle's own metric functions. The mean over the
folder is printed as one line of JSON.

Example:
    python scripts/sr_bicubic_baseline.py ../shared/data/sr_benchmark/Set5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "super_resolution"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="Folder of HR images (Set5, Set14, BSD100, ...).")
    args = parser.parse_args(argv)

    from monai.bundle import ConfigParser

    from monai_cnf.data import sr_datalist
    from monai_cnf.metrics.image import psnr_y, ssim_y
    from monai_cnf.transforms.bicubic import bicubic_resize

    config = ConfigParser()
    config.read_config([str(BUNDLE / "configs" / n) for n in ("train.json", "evaluate.json")])
    config.update({"bundle_root": str(BUNDLE), "val_crop": [-1, -1]})
    preprocess = config.get_parsed_content("validate#preprocessing")
    scale = int(config.get_parsed_content("scale"))
    psnr, ssim = [], []
    for item in sr_datalist(args.folder):
        data = preprocess(item)
        lr, hr = torch.as_tensor(data["image"]).float(), torch.as_tensor(data["label"]).float()[None]
        up = (bicubic_resize(lr, scale) * 255).round().clamp(0, 255)[None]
        psnr.append(float(psnr_y(up, hr, crop_border=scale)))
        ssim.append(float(ssim_y(up, hr, crop_border=scale)))
    result = {"folder": str(args.folder), "images": len(psnr), "psnr_y": sum(psnr) / len(psnr),
              "ssim_y": sum(ssim) / len(ssim)}  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
