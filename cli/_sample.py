"""``cnf sample``: N samples of p(y | x) for one image with a bundle's ``inference.json``, written as PNG and NIfTI.

The bundle's ``network_def``, ``preprocessing`` and ``inferer`` (a ``SampleInferer``) are used as they are; the
padding its preprocessing applied is undone with MONAI's ``Invertd`` before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai_cnf.cli._bundle import (
    Bundle,
    compose_config_files,
    load_bundle,
    make_workflow,
    parse_overrides,
    resolve_device,
)
from monai_cnf.cli._errors import CLIError

__all__ = ["SampleResult", "output_names", "run_sampling", "to_png_array", "write_outputs"]

logger = logging.getLogger("monai_cnf.cli")


@dataclass
class SampleResult:
    """Files written by ``cnf sample`` with their array shapes."""

    output: Path
    checkpoint: Path
    files: dict[str, tuple[int, ...]] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


def output_names(num_samples: int) -> list[str]:
    """Every file ``cnf sample`` writes for ``num_samples`` samples.

    >>> output_names(2)
    ['sample_000.png', 'sample_001.png', 'mean.png', 'std.png', 'samples.nii.gz', 'mean.nii.gz', 'std.nii.gz']
    """
    pngs = [f"sample_{i:03d}.png" for i in range(num_samples)]
    return [*pngs, "mean.png", "std.png", "samples.nii.gz", "mean.nii.gz", "std.nii.gz"]


def to_png_array(arr: np.ndarray, lo: float, hi: float, transpose: bool) -> np.ndarray:
    """A ``(C, *spatial)`` 2D map -> uint8 ``(H, W)`` or ``(H, W, 3)`` with ``[lo, hi]`` mapped to ``[0, 255]``.

    Args:
        arr: ``(C, X, Y)`` with C 1 or 3.
        lo: value shown black.
        hi: value shown white.
        transpose: the array is in MONAI's ``(x, y)`` = ``(W, H)`` order (``LoadImage`` of a 2D file).

    >>> to_png_array(np.array([[[0.0, 1.0]]]), 0.0, 1.0, transpose=False)
    array([[  0, 255]], dtype=uint8)
    """
    if arr.ndim != 3:
        raise ValueError(f"PNG output needs a 2D map (C, X, Y), got shape {arr.shape}.")
    scaled = np.clip(np.round((arr.astype(np.float64) - lo) / max(hi - lo, 1e-12) * 255.0), 0, 255).astype(np.uint8)
    if transpose:
        scaled = np.swapaxes(scaled, 1, 2)
    return scaled[0] if scaled.shape[0] == 1 else np.moveaxis(scaled[:3], 0, -1)


def _nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> tuple[int, ...]:
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    nib.save(img, str(path))
    return tuple(arr.shape)


def _channel_last(arr: np.ndarray) -> np.ndarray:
    """``(C, *spatial)`` -> ``(*spatial)`` for C == 1, else ``(*spatial, C)``."""
    return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)


def write_outputs(
    output: Path,
    samples: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    value_range: Sequence[float],
    affine: np.ndarray | None = None,
    transpose: bool = True,
) -> dict[str, tuple[int, ...]]:
    """Write samples, mean and std as PNG (2D only) and NIfTI; returns file name -> written array shape.

    PNG: values in ``value_range`` map to 0..255, the std map's ``[0, (hi - lo) / 2]`` (the largest possible std of
    a variable in ``[lo, hi]``) to 0..255. NIfTI keeps the values: ``samples.nii.gz`` is ``(*spatial, S)`` (C == 1)
    or ``(*spatial, C, S)``, ``mean``/``std`` are ``(*spatial)`` or ``(*spatial, C)``, in MONAI's axis order.

    Args:
        output: folder (created).
        samples: ``(S, C, *spatial)``.
        mean: ``(C, *spatial)``.
        std: ``(C, *spatial)``.
        value_range: ``(lo, hi)`` of the predicted variable (metadata ``outputs.pred.value_range``).
        affine: 4x4 affine of the input image. Defaults to identity.
        transpose: arrays are in MONAI's ``(x, y)`` order; PNGs are written ``(row, column)``. Defaults to True.
    """
    lo, hi = float(value_range[0]), float(value_range[1])
    affine = np.eye(4) if affine is None else affine
    output.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[int, ...]] = {}
    if mean.ndim == 3:  # 2D maps: PNGs
        from PIL import Image

        for i, s in enumerate(samples):
            png = to_png_array(s, lo, hi, transpose)
            Image.fromarray(png).save(output / f"sample_{i:03d}.png")
            files[f"sample_{i:03d}.png"] = png.shape
        for name, arr, top in (("mean", mean, hi), ("std", std, lo + (hi - lo) / 2)):
            png = to_png_array(arr if name == "mean" else arr + lo, lo, top, transpose)
            Image.fromarray(png).save(output / f"{name}.png")
            files[f"{name}.png"] = png.shape
    stacked = np.moveaxis(samples, 0, -1)  # (C, *spatial, S)
    stacked = stacked[0] if stacked.shape[0] == 1 else np.moveaxis(stacked, 0, -2)
    int_like = bool(np.all(samples == np.round(samples))) and samples.min() >= 0 and samples.max() <= 255
    files["samples.nii.gz"] = _nifti(
        stacked.astype(np.uint8 if int_like else np.float32), affine, output / "samples.nii.gz"
    )
    files["mean.nii.gz"] = _nifti(_channel_last(mean).astype(np.float32), affine, output / "mean.nii.gz")
    files["std.nii.gz"] = _nifti(_channel_last(std).astype(np.float32), affine, output / "std.nii.gz")
    return files


def _io(bundle: Bundle, side: str, key: str) -> Mapping[str, Any]:
    return bundle.metadata.get("network_data_format", {}).get(side, {}).get(key, {}) or {}


def _raw_channels(path: Path) -> int | None:
    """Channels of an image file as MONAI loads it (None when MONAI cannot read it)."""
    try:
        from monai.transforms import LoadImage

        return int(LoadImage(image_only=True, ensure_channel_first=True)(str(path)).shape[0])
    except Exception:  # unreadable here: the bundle's own preprocessing error is reported instead
        return None


def _channel_error(path: Path, got: int, bundle: Bundle) -> CLIError:
    image = _io(bundle, "inputs", "image")
    expected = image.get("num_channels")
    what = image.get("channel_def") or image.get("format") or ""
    return CLIError(
        f"input {path} has {got} channel(s) but bundle {bundle.name} expects {expected} "
        f"(configs/metadata.json network_data_format.inputs.image.num_channels; {what})."
    )


def _state_dict(obj: Any) -> Mapping[str, Any]:
    """A plain state_dict from a checkpoint: model.pt (a state_dict) or a trainer checkpoint ``{"network": ...}``."""
    if isinstance(obj, Mapping):
        for key in ("network", "model", "net", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                return obj[key]
    return obj


def run_sampling(
    bundle_path: Path,
    *,
    input_path: Path,
    output: Path,
    checkpoint: Path | None = None,
    run_dir: Path | None = None,
    num_samples: int = 8,
    temperature: float = 0.8,
    seed: int | None = None,
    device: str | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    preset: str | None = None,
) -> SampleResult:
    """Draw ``num_samples`` samples for ``input_path`` and write them, their mean and std (PNG + NIfTI).

    ``preset`` picks the inference overlays (``paper``: + ``inference_paper.json``; ``cpu``: ``inference.json``
    alone); None (default) takes the one whose network has the checkpoint's parameter shapes.
    """
    import torch
    from monai_cnf.cli._run import check_checkpoint, find_checkpoint, trained_config

    bundle = load_bundle(bundle_path)
    if num_samples < 1:
        raise CLIError(f"--num-samples must be >= 1, got {num_samples}.")
    if temperature < 0:
        raise CLIError(f"--temperature must be >= 0, got {temperature}.")
    output = Path(output).absolute()
    clash = [n for n in output_names(num_samples) if (output / n).exists()]
    if clash and not overwrite:
        raise CLIError(
            f"{output} already holds {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}; "
            "choose another --output or pass --overwrite (nothing was written)."
        )
    if checkpoint is None and run_dir is not None:
        checkpoint = find_checkpoint(Path(run_dir))
        if checkpoint is None:
            raise CLIError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}; train first or pass --checkpoint.")
    checkpoint = Path(checkpoint or bundle.root / "models" / "model.pt").absolute()
    check_checkpoint(checkpoint)
    device = resolve_device(device)
    state = _state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    if preset is None:
        from_run = trained_config(Path(run_dir) if run_dir is not None else None) is not None
        preset = "cpu" if from_run else _matching_preset(bundle, state)
    files = compose_config_files(bundle, "inference", preset, "cnf")
    ovr: dict[str, Any] = {"bundle_root": str(bundle.root), "device": device, "checkpoint": str(checkpoint)}
    ovr.update({"num_samples": num_samples, "temperature": temperature})
    ovr.update(parse_overrides(overrides))
    workflow = make_workflow(bundle, files, {})
    workflow.parser.update(ovr)
    workflow.parser.parse(reset=True)
    parser = workflow.parser

    # 1. the input, through the bundle's preprocessing; channels checked against metadata.json
    expected = _io(bundle, "inputs", "image").get("num_channels")
    preprocessing = parser.get_parsed_content("preprocessing")
    try:
        data = preprocessing({"image": str(Path(input_path).absolute())})
    except Exception as err:
        raw = _raw_channels(input_path)
        if expected is not None and raw is not None and raw != int(expected):
            raise _channel_error(input_path, raw, bundle) from None
        raise CLIError(f"cannot preprocess {input_path} with {files[0].name}: {err}") from err
    x = data["image"]
    if expected is not None and int(x.shape[0]) != int(expected):
        raise _channel_error(input_path, int(x.shape[0]), bundle)

    # 2. the network (as trained: the run folder's resolved config, else inference.json) and its weights
    network, source = (
        _network(parser, Path(run_dir) if run_dir is not None else None),
        " + ".join(f.name for f in files),
    )
    trained = trained_config(Path(run_dir) if run_dir is not None else None)
    if trained is not None:
        source = str(trained)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CLIError(
            f"checkpoint {checkpoint} does not fit the network of {source} ({first}); "
            "was it trained with another --preset/--model? pass the matching overrides."
        ) from None
    network = network.to(device).eval()

    # 3. samples through the bundle's SampleInferer (std and samples requested)
    inferer = parser.get_parsed_content("inferer")
    for attr, value in (("num_samples", num_samples), ("temperature", temperature)):
        setattr(inferer, attr, value)
    inferer.return_std = True
    inferer.return_samples = True
    if trained is not None:  # sample as the run validated: its sliding windows (the weights depend on them)
        _use_trained_windows(inferer, trained)
    if seed is not None:
        torch.manual_seed(seed)
        inferer.generator = torch.Generator(device=device).manual_seed(seed)
    out = inferer(x.unsqueeze(0).to(device), network)
    if not isinstance(out, Mapping):
        raise CLIError(f"the inferer of {files[0].name} returned {type(out).__name__}, expected a SampleInferer.")
    samples, mean, std = out["samples"][:, 0], out["pred"][0], out["std"][0]

    # 4. undo the preprocessing's spatial changes (padding), as the bundle's postprocessing does
    samples, mean, std = _restore_geometry(parser, preprocessing, data, [samples.flatten(0, 1), mean, std])
    samples = samples.reshape(num_samples, -1, *samples.shape[1:])
    transpose = _xy_order(preprocessing)
    affine = _affine(x)
    vr = _io(bundle, "outputs", "pred").get("value_range") or [0, 1]
    written = write_outputs(output, samples, mean, std, vr, affine, transpose=transpose)
    result = SampleResult(output, checkpoint, written)
    result.info.update(
        {
            "input": str(input_path),
            "checkpoint": str(checkpoint),
            "network": source,
            "samples / temperature": f"{num_samples} / {temperature}",
            "windows": _describe_roi(getattr(inferer, "roi_size", None)),
            "seed": "random" if seed is None else str(seed),
            "device": device,
        }
    )
    return result


def _use_trained_windows(inferer: Any, config: Path) -> None:
    """Give ``inferer`` the sliding windows of a run's resolved training config (a config written before
    ``roi_size`` existed leaves the bundle's inference settings in place)."""
    from monai.bundle import ConfigParser

    from monai_cnf.engines import sliding_window_settings

    trained = ConfigParser()
    trained.read_config(str(config))
    if "roi_size" in trained:
        for attr, value in sliding_window_settings(trained).items():
            setattr(inferer, attr, value)


def _describe_roi(roi_size: Any) -> str:
    """``"96 x 96 sliding windows"`` or ``"whole image"``."""
    if roi_size is None:
        return "whole image"
    sizes = [roi_size] if isinstance(roi_size, int) else list(roi_size)
    return " x ".join(str(v) for v in sizes) + " sliding windows"


def _matching_preset(bundle: Bundle, state: Mapping[str, Any]) -> str:
    """``cpu`` (``inference.json`` alone, the shipped weights' network) or ``paper`` (+ ``inference_paper.json``):
    the first whose ``network_def`` has the parameter shapes of ``state``; ``cpu`` when neither does (the load
    then reports the mismatch)."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    for preset in ("cpu", "paper"):
        files = compose_config_files(bundle, "inference", preset, "cnf")
        if preset == "paper" and len(files) == 1:
            break
        try:
            workflow = make_workflow(bundle, files, {"bundle_root": str(bundle.root), "device": "cpu"})
            net = workflow.parser.get_parsed_content("network_def")
        except Exception as err:  # a config that does not build is reported by the real load below
            logger.debug("network of %s does not build: %s", [f.name for f in files], err)
            continue
        if {k: tuple(v.shape) for k, v in net.state_dict().items()} == shapes:
            return preset
    return "cpu"


def _network(parser: Any, run_dir: Path | None) -> Any:
    """``network_def`` of the run's resolved training config when there is one (the widths it was trained with),
    else the bundle's ``inference.json``."""
    from monai_cnf.cli._run import trained_config

    config = trained_config(run_dir)
    if config is None:
        return parser.get_parsed_content("network_def")
    from monai.bundle import ConfigParser

    trained = ConfigParser()
    trained.read_config(str(config))
    return trained.get_parsed_content("network_def")


#: Postprocessing steps that restore the input's geometry (the rest, thresholds and savers, are not wanted here).
GEOMETRY_STEPS = ("Invertd", "CropToScaledInputd")


def _restore_geometry(parser: Any, preprocessing: Any, data: Mapping[str, Any], tensors: list[Any]) -> list[np.ndarray]:
    """Apply the geometry steps of the bundle's ``postprocessing`` (``Invertd`` for DRIVE's padding,
    ``CropToScaledInputd`` for SR's 2x grid) to each ``(C, *spatial)`` map; without such steps, invert the
    preprocessing with MONAI's ``Invertd`` when the output lies on the input's grid."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    x = data["image"]
    steps = []
    if "postprocessing" in parser:
        post = parser.get_parsed_content("postprocessing")
        steps = [t for t in getattr(post, "transforms", ()) if type(t).__name__ in GEOMETRY_STEPS]
    out = []
    for t in tensors:
        t = t.detach().cpu().float()
        t = t.as_tensor() if hasattr(t, "as_tensor") else t
        if steps:
            d: dict[str, Any] = {"pred": MetaTensor(t), "image": x}
            for step in steps:
                d = step(d)
            t = d["pred"]
        elif isinstance(x, MetaTensor) and x.applied_operations and tuple(t.shape[1:]) == tuple(x.shape[1:]):
            inv = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False)
            t = inv({"pred": MetaTensor(t), "image": x})["pred"]
        t = t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)
        out.append(t.numpy())
    return out


def _xy_order(preprocessing: Any) -> bool:
    """Whether the bundle's ``LoadImage(d)`` gives 2D images in MONAI's ``(x, y)`` order (PNGs need a transpose).

    MONAI's readers index ``(x, y)`` by default; a ``PILReader(reverse_indexing=False)`` (the DRIVE bundle's
    choice) keeps the file's ``(row, column)`` order.
    """
    for t in getattr(preprocessing, "transforms", ()):
        loader = getattr(t, "_loader", t)
        readers = getattr(loader, "readers", None)
        if type(loader).__name__ == "LoadImage" and readers:
            reader = readers[-1]  # a reader given by the config is tried first (last in the list)
            if type(reader).__name__ == "PILReader":
                return bool(getattr(reader, "reverse_indexing", True))
            return True
    return False


def _affine(x: Any) -> np.ndarray:
    affine = getattr(x, "affine", None)
    if affine is None:
        return np.eye(4)
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (4, 4):
        return a
    full = np.eye(4)
    n = a.shape[0] - 1
    full[:n, :n], full[:n, 3] = a[:n, :n], a[:n, n]
    return full
