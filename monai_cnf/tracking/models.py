"""Trained CNFs and factored baselines as MLflow models: a ``pyfunc`` that samples, logged and registered.

MLflow's own ``mlflow.pytorch`` flavour serves ``model(x)``, which for these models is only the temperature-0
prediction. What a user of a likelihood model wants from the registry is samples, so :class:`SamplingModel` is a
``pyfunc`` whose ``predict`` takes ``num_samples``, ``temperature`` and ``seed`` as MLflow params and returns the
per-pixel mean and std of the samples (and the samples on request). The network travels inside the model
(cloudpickled with the ``PythonModel``), so loading needs ``monai-cnf`` importable, nothing else.

Logging goes through :class:`mlflow.MlflowClient` into an existing run (the bundle's training run is created and
kept open by :class:`~monai_cnf.tracking.CNFMLFlowHandler` with the client, not the fluent API):
``mlflow.pyfunc.save_model`` writes the model folder, ``log_artifacts`` uploads it, and the client's registry API adds
a version of a per-bundle, per-model-kind name (:func:`registered_model_name`) pointing at it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

__all__ = ["DEFAULT_PARAMS", "MLflowModelHandler", "SamplingModel", "log_sampling_model", "registered_model_name"]

logger = logging.getLogger(__name__)

#: ``predict`` params and their defaults (MLflow params must have a fixed type: these are it).
DEFAULT_PARAMS: dict[str, Any] = {"num_samples": 20, "temperature": 1.0, "seed": 0, "return_samples": False}


def registered_model_name(bundle: str, model_kind: str) -> str:
    """The registry name of a bundle's model of one kind, e.g. ``drive_vessel-cnf``.

    Example:
        >>> registered_model_name("drive_vessel", "factored")
        'drive_vessel-factored'
    """
    if not bundle or not model_kind:
        raise ValueError(f"`bundle` and `model_kind` must be non-empty, got {bundle!r} and {model_kind!r}.")
    return f"{bundle}-{model_kind}"


class SamplingModel(PythonModel):
    """MLflow ``pyfunc`` of a likelihood model: ``predict(images, params)`` -> mean and std of its samples.

    Input: a float32 array ``(B, in_channels, *spatial)`` prepared as the bundle's ``preprocessing`` prepares it
    (intensities in [0, 1], sizes divisible by ``2**num_levels``). Params (:data:`DEFAULT_PARAMS`):
    ``num_samples``, ``temperature``, ``seed`` (sampling is reproducible) and ``return_samples``.
    Output: a dict of float32 arrays, ``"mean"`` and ``"std"`` ``(B, out_channels, *target_spatial)`` and, with
    ``return_samples``, ``"samples"`` ``(S, B, out_channels, *target_spatial)``.

    Args:
        network: the trained model (``sample``); it is kept in evaluation mode on the CPU.
        chunk_size: samples drawn per pass. Defaults to 4.
    """

    def __init__(self, network: torch.nn.Module, chunk_size: int = 4) -> None:
        self.network = network.to("cpu").eval()
        self.chunk_size = int(chunk_size)

    # MLflow reads predict's input hint as a schema: np.ndarray is its "no schema from the hint" type (the signature
    # is given when logging); no hint at all makes it warn on every import
    def predict(self, context, model_input: np.ndarray, params=None):
        from monai_cnf.engines.inferer import SampleInferer

        p = {**DEFAULT_PARAMS, **(params or {})}
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        generator = torch.Generator().manual_seed(int(p["seed"]))
        inferer = SampleInferer(
            num_samples=int(p["num_samples"]),
            temperature=float(p["temperature"]),
            chunk_size=self.chunk_size,
            return_std=True,
            return_samples=bool(p["return_samples"]),
            generator=generator,
        )
        out = inferer(x, self.network)
        result = {"mean": out["pred"].float().numpy(), "std": out["std"].float().numpy()}
        if "samples" in out:
            result["samples"] = out["samples"].float().numpy()
        return result


@contextlib.contextmanager
def _quiet_pyfunc() -> Iterator[None]:
    """Silence what MLflow logs on every ``save_model`` of this model, which is no news to the user: the
    CloudPickle note (the model object *is* the trained network; loading it needs monai-cnf, see
    ``pip_requirements``) and "Validating input example against model signature". Errors still show."""
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pyfunc_logger.setLevel(level)


def log_sampling_model(
    network: torch.nn.Module,
    run_id: str,
    input_example: np.ndarray | torch.Tensor,
    bundle: str,
    model_kind: str,
    artifact_path: str = "model",
    tracking_uri: str | None = None,
    register: bool = True,
    chunk_size: int = 4,
) -> Any:
    """Log ``network`` as a :class:`SamplingModel` into the run ``run_id`` and register it.

    The signature (input tensor, output dict, params) is inferred from one ``predict`` on ``input_example`` with
    2 samples. Returns the new ``ModelVersion`` (or None when ``register`` is False).

    Args:
        network: the trained model.
        run_id: an existing MLflow run (e.g. the bundle's training run).
        input_example: one preprocessed image batch ``(1, in_channels, *spatial)`` (keep it small: it is stored).
        bundle: the bundle's name (registry name, see :func:`registered_model_name`).
        model_kind: ``"cnf"`` or ``"factored"``.
        artifact_path: where in the run's artifacts. Defaults to ``"model"``.
        tracking_uri: the MLflow store; None uses the current one. Defaults to None.
        register: register a new model version. Defaults to True.
        chunk_size: samples per pass when serving. Defaults to 4.

    Example:
        >>> # version = log_sampling_model(net, run_id, x[:1], "drive_vessel", "cnf")
        >>> # mlflow.pyfunc.load_model(f"models:/drive_vessel-cnf/{version.version}").predict(x, {"num_samples": 8})
    """
    from mlflow.models import infer_signature

    example = np.asarray(input_example.detach().cpu() if torch.is_tensor(input_example) else input_example)
    example = example.astype(np.float32)
    if example.ndim < 3:
        raise ValueError(f"`input_example` must be a (B, C, *spatial) batch, got shape {example.shape}.")
    model = SamplingModel(network, chunk_size=chunk_size)
    params = dict(DEFAULT_PARAMS)
    output = model.predict(None, example, {**params, "num_samples": 2})
    signature = infer_signature(example, output, params=params)
    client = mlflow.MlflowClient(tracking_uri)
    import monai_cnf

    requirements = [f"monai-cnf=={monai_cnf.__version__}", f"torch=={torch.__version__.split('+')[0]}"]
    with tempfile.TemporaryDirectory() as tmp, _quiet_pyfunc():
        path = Path(tmp) / artifact_path
        mlflow.pyfunc.save_model(
            path=str(path), python_model=model, signature=signature, input_example=example,
            pip_requirements=requirements,
        )  # fmt: skip
        client.log_artifacts(run_id, str(path), artifact_path)
    if not register:
        return None
    # the client's registry API, not mlflow.register_model: no global tracking/registry URI is read or changed
    name = registered_model_name(bundle, model_kind)
    registry = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        registry.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        registry.create_registered_model(name, tags={"bundle": bundle, "model_kind": model_kind})
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    return registry.create_model_version(name, source, run_id=run_id, tags={"artifact_path": artifact_path})


class MLflowModelHandler:
    """Ignite handler: log and register the network as a :class:`SamplingModel` on each new best and at the end.

    Attach it to the trainer (a bundle's ``train#handlers``). After each validation whose key metric is a new best
    (``validator.state.best_metric_epoch`` is the current epoch) and when training completes, the network is logged
    into the training run (the id in ``run_dir/mlflow_run_id``, written by
    :class:`~monai_cnf.tracking.CNFMLFlowHandler`) at ``model`` (the latest best) or ``model_final`` and registered
    as a new version of :func:`registered_model_name` ``(bundle, model_kind)``. The input example is the top-left
    ``example_size`` crop of the last validation image (a full DRIVE image would be megabytes of JSON).

    Args:
        network: the network being trained.
        run_dir: the bundle's ``output_dir``.
        bundle: the bundle's name.
        model_kind: ``"cnf"`` or ``"factored"``.
        validator: the bundle's evaluator (for the best metric); None logs at the end only. Defaults to None.
        tracking_uri: the MLflow store; None resolves as the tracking handler does. Defaults to None.
        example_size: spatial size of the input example. Defaults to 32.
        enabled: switch it off (e.g. ``"enabled": false`` in a config). Defaults to True.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        run_dir: str | Path,
        bundle: str,
        model_kind: str,
        validator: Any = None,
        tracking_uri: str | None = None,
        example_size: int = 32,
        enabled: bool = True,
    ) -> None:
        from monai_cnf.tracking.utils import resolve_tracking_uri

        registered_model_name(bundle, model_kind)  # validates the names before any training
        # resolved now, as CNFMLFlowHandler resolves its store when it is built (MLFLOW_TRACKING_URI first, which the
        # CLI sets), so both write into the same store whatever the environment is later
        self._uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri)
        self.network = network
        self.run_dir = Path(run_dir)
        self.bundle, self.model_kind = bundle, model_kind
        self.validator = validator
        self.tracking_uri = tracking_uri
        self.example_size = int(example_size)
        self.enabled = bool(enabled)
        self._example: torch.Tensor | None = None
        self.versions: list[Any] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if not self.enabled:
            return
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._on_validation)
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self._remember_example)
        engine.add_event_handler(Events.COMPLETED, self._on_completed)

    def _remember_example(self, engine: Any) -> None:
        image = _image_of(engine.state.output) if engine.state.output is not None else None
        if image is None:
            image = _image_of(engine.state.batch)
        if image is not None:
            self._keep(image)

    def _keep(self, image: torch.Tensor) -> None:
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
        divisor = int(getattr(self.network, "divisor", 1))
        size = max(divisor, self.example_size // divisor * divisor)
        crop = (slice(0, 1), slice(None), *(slice(0, min(size, n) // divisor * divisor) for n in image.shape[2:]))
        self._example = image[crop].detach().float().cpu().clone()

    def _log(self, artifact_path: str) -> None:
        from monai_cnf.tracking.utils import read_run_id

        run_id = read_run_id(self.run_dir)
        if run_id is None or self._example is None:
            logger.warning("no MLflow training run in %s (or no input example): model not logged", self.run_dir)
            return
        training = self.network.training
        try:
            version = log_sampling_model(
                self.network, run_id, self._example, self.bundle, self.model_kind, artifact_path=artifact_path,
                tracking_uri=self._uri,
            )  # fmt: skip
        except mlflow.exceptions.MlflowException as err:  # the registry is a by-product: never stop training for it
            logger.warning("could not log the model to MLflow (%s): %s", self._uri, err)
            return
        finally:
            self.network.train(training)
        self.versions.append(version)
        logger.info("logged %s as MLflow model %s version %s", artifact_path, version.name, version.version)

    def _on_validation(self, evaluator: Any) -> None:
        image = _image_of(evaluator.state.batch)
        if image is not None:
            self._keep(image)
        if getattr(evaluator.state, "best_metric_epoch", -1) == evaluator.state.epoch:
            self._log("model")

    def _on_completed(self, engine: Any) -> None:
        self._log("model_final")


def _image_of(data: Any) -> torch.Tensor | None:
    """The ``"image"`` batch of an engine's batch or output: a dict, or a list of per-item dicts (decollated)."""
    if isinstance(data, dict):
        image = data.get("image")
        return image if torch.is_tensor(image) else None
    if isinstance(data, (list, tuple)) and data:
        if isinstance(data[0], dict):
            images = [d.get("image") for d in data]
            return torch.stack(images) if all(torch.is_tensor(i) for i in images) else None
        return data[0] if torch.is_tensor(data[0]) else None
    return None
