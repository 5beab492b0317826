"""A seeded synthetic retina set in DRIVE's own folder layout (the DRIVE bundle's default data).

Each image is a fundus-like RGB picture: an orange-red field of view (FOV) with vignetting and
low-frequency illumination changes, a bright optic disc, a darker macula, fine texture and noise, and
a vessel tree grown from the disc: branching random-walk polylines whose width tapers and splits by
Murray's law (``w^3 = w_1^3 + w_2^3``), that curve around the macula, drawn with anti-aliasing
(4x supersampling). Thin vessels have lower contrast. The 1st observer labels every vessel except a
random share of the faintest branches; the 2nd observer (test split) misses a different share,
draws widths with a small per-branch jitter and a per-image bias, like a second human grader.

Files, names and formats match the real DRIVE archive, so :func:`monai_cnf.data.drive_datalist` and
the loading transforms work unchanged: ``training/images/21_training.tif`` (RGB TIFF),
``training/1st_manual/21_manual1.gif`` (L GIF, {0, 255}), ``training/mask/21_training_mask.gif`` (L GIF,
{0, 255}), ``test/images/01_test.tif``, ``test/1st_manual/01_manual1.gif``,
``test/2nd_manual/01_manual2.gif`` (palette GIF, indices {0, 1}, as in DRIVE) and ``test/mask/01_test_mask.gif``.

Only numpy, scipy.ndimage and Pillow are used. Image ``k`` of a split depends only on ``(seed, split, k)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

__all__ = ["MANIFEST_NAME", "SyntheticRetina", "make_synthetic_drive", "synthesize_retina"]

logger = logging.getLogger(__name__)

_SUPERSAMPLE = 4
_GENERATOR_VERSION = 1
#: the file, at the set's root, that records how it was generated (settings and completeness)
MANIFEST_NAME = "synthetic_drive.json"


@dataclass
class SyntheticRetina:
    """One synthetic fundus image and its annotations (arrays in row-major ``(H, W)`` order).

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        label: ``(H, W)`` bool, the 1st observer.
        label2: ``(H, W)`` bool, the 2nd observer.
        mask: ``(H, W)`` bool, the field of view.
    """

    image: np.ndarray
    label: np.ndarray
    label2: np.ndarray
    mask: np.ndarray


def _grow_tree(rng: np.random.Generator, disc: np.ndarray, fovea: np.ndarray, radius: float, center: np.ndarray):
    """Grow the vessel tree; returns segments ``(N, 6)``: x0, y0, x1, y1, width, branch id."""
    dd = 0.28 * radius  # optic disc diameter in pixels
    temporal = (fovea - disc) / np.linalg.norm(fovea - disc)
    base = math.atan2(temporal[1], temporal[0])
    segments: list[tuple[float, float, float, float, float, int]] = []
    # (x, y, angle, width, side, generation, branch id); side = +1 / -1 turns around the macula that way
    stack: list[tuple[float, float, float, float, float, int, int]] = []
    next_id = 0
    trunks = [(+1, 1.3), (+1, 1.6), (-1, 1.3), (-1, 1.6), (+1, 2.3), (+1, 2.8), (-1, 2.3), (-1, 2.8)]
    for side, offset in trunks:
        angle = base + side * (offset + rng.normal(0, 0.12))
        width = rng.uniform(5.5, 8.0) if offset < 2 else rng.uniform(3.5, 6.0)
        start = disc + 0.08 * dd * np.array([math.cos(angle), math.sin(angle)])
        stack.append((start[0], start[1], angle, width, side, 0, next_id))
        next_id += 1
    for _ in range(int(rng.integers(3, 6))):  # small vessels leaving the disc in other directions
        angle = rng.uniform(-math.pi, math.pi)
        start = disc + 0.3 * dd * np.array([math.cos(angle), math.sin(angle)])
        stack.append((start[0], start[1], angle, rng.uniform(1.8, 3.2), rng.choice([-1, 1]), 2, next_id))
        next_id += 1
    max_segments = 6000
    # random numbers drawn in blocks (much faster than one generator call per step)
    pool_n = rng.normal(size=4 * max_segments)
    pool_u = rng.random(size=8 * max_segments)
    i_n = i_u = 0
    dx, dy = float(disc[0]), float(disc[1])
    fx, fy = float(fovea[0]), float(fovea[1])
    cx, cy = float(center[0]), float(center[1])
    tx, ty = float(temporal[0]), float(temporal[1])
    inv_tan, inv_avoid = 1.0 / (3.0 * dd), 1.0 / (1.1 * dd)
    while stack and len(segments) < max_segments:
        x, y, angle, width, side, gen, bid = stack.pop()
        length = 0.0
        while width >= 0.9 and len(segments) < max_segments:
            step = min(max(1.2 * width, 3.0), 7.0)
            # preferred direction: away from the disc, drifting temporally, bent around the macula on `side`
            rx, ry = x - dx, y - dy
            rn = math.hypot(rx, ry) + 1e-9
            vx, vy = fx - x, fy - y
            dist_f = math.hypot(vx, vy) + 1e-9
            vx, vy = vx / dist_f, vy / dist_f
            w_tan = 2.0 * math.exp(-((dist_f * inv_tan) ** 2))
            w_avoid = 0.8 * math.exp(-((dist_f * inv_avoid) ** 2))
            px = 0.7 * rx / rn + 0.35 * tx - w_tan * vy * side - w_avoid * vx
            py = 0.7 * ry / rn + 0.35 * ty + w_tan * vx * side - w_avoid * vy
            diff = (math.atan2(py, px) - angle + math.pi) % (2 * math.pi) - math.pi
            angle += 0.08 * diff + 0.09 * pool_n[i_n % pool_n.size]
            i_n += 1
            nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
            if math.hypot(nx - cx, ny - cy) > radius - 2:
                break
            segments.append((x, y, nx, ny, width, bid))
            x, y = nx, ny
            length += step
            width *= 0.996
            # branching: bigger vessels branch less often per pixel, children by Murray's law
            u = pool_u[i_u % pool_u.size]
            i_u += 1
            if length > 12 and u < step / (38.0 + 6.0 * width):
                r1, r2, r3, r4 = (pool_u[(i_u + j) % pool_u.size] for j in range(4))
                i_u += 4
                child = width * (0.35 + 0.45 * r1)
                width = max((width**3 - child**3) ** (1.0 / 3.0), 0.9 if width > 1.5 else 0.0)
                turn = 1.0 if r2 < 0.5 else -1.0
                child_angle = angle + turn * (0.6 + 0.7 * r3)
                angle -= turn * (0.05 + 0.2 * r4)
                if child >= 0.9:
                    stack.append((x, y, child_angle, child, side, gen + 1, next_id))
                    next_id += 1
                length = 0.0
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 6)
    return seg


def _render(segments: np.ndarray, widths: np.ndarray, values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased rendering of thick segments: mean over a supersampled canvas, float in [0, 1]."""
    h, w = size
    ss = _SUPERSAMPLE
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    order = np.argsort(widths, kind="stable")  # thick vessels are drawn last (on top)
    for i in order.tolist():
        x0, y0, x1, y1 = ((segments[i, :4] + 0.5) * ss - 0.5).tolist()
        wpx = float(widths[i]) * ss
        fill = int(values[i])
        draw.line([(x0, y0), (x1, y1)], fill=fill, width=max(1, int(wpx + 0.5)))
        if wpx >= 3.0:  # round joints (invisible below 3 sub-pixels)
            r = wpx / 2.0
            draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=fill)
    return np.asarray(canvas.reduce(ss), dtype=np.float64) / 255.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise (filtered at 1/8 resolution, bilinear upsampling)."""
    small = (max(2, shape[0] // 8), max(2, shape[1] // 8))
    n = ndimage.gaussian_filter(rng.normal(size=small), sigma / 8.0, mode="wrap")
    n = (n - n.mean()) / (n.std() + 1e-9)
    return np.asarray(Image.fromarray(n.astype(np.float32), mode="F").resize(shape[::-1], Image.BILINEAR))


def synthesize_retina(rng: np.random.Generator, image_size: tuple[int, int] = (584, 565)) -> SyntheticRetina:
    """Draw one synthetic fundus image with its two annotations and FOV mask.

    Args:
        rng: the random generator (the image is a deterministic function of its state).
        image_size: ``(H, W)``. Defaults to DRIVE's ``(584, 565)``.

    Returns:
        a :class:`SyntheticRetina`.

    Example:
        >>> r = synthesize_retina(np.random.default_rng(0), (96, 96))
        >>> r.image.shape, r.image.dtype, r.label.dtype
        ((96, 96, 3), dtype('uint8'), dtype('bool'))
    """
    h, w = (int(v) for v in image_size)
    if h < 32 or w < 32:
        raise ValueError(f"image_size must be at least (32, 32), got {image_size}.")
    scale = min(h, w) / 565.0  # geometry and widths follow DRIVE's resolution
    center = np.array([w / 2.0 + rng.normal(0, 3 * scale), h / 2.0 + rng.normal(0, 3 * scale)])
    radius = 0.478 * min(h, w) * rng.uniform(0.97, 1.0)
    side = rng.choice([-1.0, 1.0])  # left or right eye
    disc = center + np.array([side * 0.55 * radius, rng.normal(0, 0.05 * radius)])
    dd = 0.28 * radius
    fovea = disc + np.array([-side * 2.3 * dd, rng.normal(0, 0.1 * dd)])

    seg = _grow_tree(rng, disc, fovea, radius, center)
    seg[:, 4] *= scale**0.5 if scale < 1 else 1.0  # keep thin vessels visible on small test images
    widths = seg[:, 4]
    branch = seg[:, 5].astype(np.int64)
    num_branches = int(branch.max()) + 1 if len(branch) else 0
    mean_w = np.bincount(branch, weights=widths, minlength=num_branches) / np.maximum(
        np.bincount(branch, minlength=num_branches), 1
    )
    faint = mean_w < 2.0
    keep1 = ~faint | (rng.random(num_branches) < 0.8)
    keep2 = ~faint | (rng.random(num_branches) < 0.7)
    jitter = np.exp(rng.normal(0, 0.25, size=num_branches)) * rng.uniform(0.85, 1.1)
    contrast = np.clip(0.25 + 0.55 * (widths - 0.9) / 6.0, 0.2, 0.8)

    darkness = _render(seg, widths, np.round(255 * contrast), (h, w))
    cover1 = _render(seg[keep1[branch]], widths[keep1[branch]], np.full(int(keep1[branch].sum()), 255), (h, w))
    w2 = widths * jitter[branch]
    cover2 = _render(seg[keep2[branch]], w2[keep2[branch]], np.full(int(keep2[branch].sum()), 255), (h, w))

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r_fov = np.hypot(xx - center[0], yy - center[1])
    mask = r_fov <= radius
    d_disc = np.hypot(xx - disc[0], yy - disc[1])
    d_fovea = np.hypot(xx - fovea[0], yy - fovea[1])

    base = np.array([rng.uniform(0.68, 0.85), rng.uniform(0.27, 0.38), rng.uniform(0.08, 0.15)])
    illum = (1.0 - 0.5 * (r_fov / radius) ** 2.5) * (1.0 + 0.08 * _smooth_noise(rng, (h, w), 60 * scale))
    macula = 1.0 - 0.3 * np.exp(-((d_fovea / (1.1 * dd)) ** 2))
    img = base[None, None, :] * (illum * macula)[..., None]
    disc_profile = np.exp(-((d_disc / (0.55 * dd)) ** 4))
    cup = np.exp(-((d_disc / (0.22 * dd)) ** 2))
    img += disc_profile[..., None] * np.array([0.3, 0.4, 0.18]) + cup[..., None] * np.array([0.08, 0.12, 0.1])
    texture = ndimage.gaussian_filter(rng.normal(size=(h, w)), 1.5 * scale + 0.5)
    img *= (1.0 + 0.05 * texture / (texture.std() + 1e-9))[..., None]
    dark = ndimage.gaussian_filter(darkness, 0.6)
    img *= 1.0 - dark[..., None] * np.array([0.45, 0.85, 0.7])
    img += rng.normal(0, 0.008, size=img.shape)
    edge = np.clip(radius - r_fov + 0.5, 0.0, 1.0)  # anti-aliased FOV border
    img = img * edge[..., None] + rng.uniform(0.0, 0.015, size=img.shape) * (1.0 - edge[..., None])
    image = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return SyntheticRetina(image=image, label=(cover1 >= 0.5) & mask, label2=(cover2 >= 0.5) & mask, mask=mask)


def _save_atomic(image: Image.Image, path: Path, fmt: str, **kwargs: Any) -> None:
    """Write to a temporary name, then rename: an interrupted run never leaves a truncated file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format=fmt, **kwargs)
    os.replace(tmp, path)


def _write_gif_l(path: Path, binary: np.ndarray) -> None:
    # optimize=False keeps the full grey palette, so the file reads back as mode "L" with {0, 255}, as DRIVE's
    _save_atomic(Image.fromarray(binary.astype(np.uint8) * 255, mode="L"), path, "GIF", optimize=False)


def _write_gif_p01(path: Path, binary: np.ndarray) -> None:
    im = Image.fromarray(binary.astype(np.uint8), mode="P")  # indices {0, 1}, like DRIVE's 2nd_manual
    im.putpalette([0, 0, 0, 255, 255, 255])
    _save_atomic(im, path, "GIF")


def _write_manifest(path: Path, settings: dict[str, Any], complete: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({**settings, "complete": complete}, indent=2))
    os.replace(tmp, path)


def make_synthetic_drive(
    root: str | Path,
    seed: int = 0,
    num_train: int = 20,
    num_test: int = 20,
    image_size: tuple[int, int] = (584, 565),
    overwrite: bool = False,
) -> Path:
    """Write a synthetic retina set in DRIVE's layout under ``root`` and return ``root``.

    Training images are numbered 21.. (``21_training.tif``), test images 01.. (``01_test.tif``), as in DRIVE.
    Image ``k`` of a split depends only on ``(seed, split, k)``, so a different ``num_train`` does not change
    the images it shares with another call.

    Args:
        root: output folder (created); it gets ``training/`` and ``test/``.
        seed: random seed. Defaults to 0.
        num_train: number of training images (at most 99). Defaults to 20.
        num_test: number of test images (at most 99). Defaults to 20.
        image_size: ``(H, W)``. Defaults to DRIVE's ``(584, 565)``.
        overwrite: regenerate every file. Otherwise a complete set written with the same settings (recorded in
            ``root/synthetic_drive.json``) is reused as is, an interrupted one is completed, and one written with
            other settings is regenerated. Defaults to False.

    Returns:
        the path of ``root``.

    Raises:
        ValueError: counts outside [0, 99] or a too small ``image_size``.
        FileExistsError: ``root`` holds DRIVE-like files that this function did not write (a real DRIVE copy is
            never overwritten unless ``overwrite=True``).

    Example:
        >>> import tempfile
        >>> from monai_cnf.data import drive_datalist
        >>> root = make_synthetic_drive(tempfile.mkdtemp(), num_train=2, num_test=1, image_size=(64, 64))
        >>> len(drive_datalist(root, "training")), sorted(drive_datalist(root, "test")[0])
        (2, ['image', 'label', 'label2', 'mask'])
    """
    for name, n in (("num_train", num_train), ("num_test", num_test)):
        if not 0 <= int(n) <= 99:
            raise ValueError(f"{name} must be in [0, 99] (DRIVE-style two-digit ids), got {n}.")
    root = Path(root)
    size = [int(v) for v in image_size]
    settings = {
        "generator": "monai_cnf.data.make_synthetic_drive",
        "version": _GENERATOR_VERSION,
        "seed": int(seed),
        "num_train": int(num_train),
        "num_test": int(num_test),
        "image_size": size,
    }
    manifest = root / MANIFEST_NAME
    previous = json.loads(manifest.read_text()) if manifest.is_file() else None
    existing = [p for p in (root / "training", root / "test") if p.is_dir() and any(p.rglob("*.*"))]
    if previous is None and existing and not overwrite:
        raise FileExistsError(
            f"{str(root)!r} already holds DRIVE-like files that make_synthetic_drive did not write (no "
            f"{MANIFEST_NAME}); refusing to overwrite them. Pass an empty folder, or overwrite=True."
        )
    if previous is not None and {k: v for k, v in previous.items() if k != "complete"} == settings:
        if previous.get("complete") and not overwrite:
            logger.info("reusing the synthetic retina set in %s", root)
            return root
    elif previous is not None:
        overwrite = True  # other settings: regenerate everything and drop images beyond the new counts
        for split in ("training", "test"):
            for f in (root / split).rglob("*") if (root / split).is_dir() else []:
                if f.is_file() and f.suffix in (".tif", ".gif"):
                    f.unlink()
    root.mkdir(parents=True, exist_ok=True)
    _write_manifest(manifest, settings, complete=False)
    specs = [("training", 0, int(num_train), 21), ("test", 1, int(num_test), 1)]
    for split, code, n, first in specs:
        folders = ["images", "1st_manual", "mask"] + (["2nd_manual"] if split == "test" else [])
        for f in folders:
            (root / split / f).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            sid = f"{first + k:02d}"
            paths = {
                "image": root / split / "images" / f"{sid}_{split}.tif",
                "label": root / split / "1st_manual" / f"{sid}_manual1.gif",
                "mask": root / split / "mask" / f"{sid}_{split}_mask.gif",
            }
            if split == "test":
                paths["label2"] = root / split / "2nd_manual" / f"{sid}_manual2.gif"
            if not overwrite and all(p.exists() for p in paths.values()):
                continue  # written by an interrupted run with the same settings
            retina = synthesize_retina(np.random.default_rng([int(seed), code, k]), (size[0], size[1]))
            _save_atomic(Image.fromarray(retina.image, mode="RGB"), paths["image"], "TIFF", compression="tiff_lzw")
            _write_gif_l(paths["label"], retina.label)
            _write_gif_l(paths["mask"], retina.mask)
            if "label2" in paths:
                _write_gif_p01(paths["label2"], retina.label2)
    _write_manifest(manifest, settings, complete=True)
    logger.info(
        "synthetic DRIVE-layout retina set (seed %d, %d training, %d test) in %s", seed, num_train, num_test, root
    )
    return root
