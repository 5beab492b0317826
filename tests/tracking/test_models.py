"""Trained models in MLflow: a sampling pyfunc logged into a run, registered, and loaded back by ``models:/``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

mlflow = pytest.importorskip("mlflow")

from monai_cnf.networks import ConditionalNormalizingFlow, FactoredBaseline  # noqa: E402
from monai_cnf.tracking.models import log_sampling_model, registered_model_name  # noqa: E402


def _cnf() -> ConditionalNormalizingFlow:
    torch.manual_seed(0)
    net = ConditionalNormalizingFlow(
        2, 3, 1, num_levels=2, num_steps=1, hidden_channels=8,
        conditioner_kwargs={"feature_channels": (4, 8), "norm": "batch"},
        dequantizer_kwargs={"num_steps": 1, "hidden_channels": 8},
    )  # fmt: skip
    return net.eval()


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("drive_vessel", artifact_location=str(tmp_path / "artifacts"))
    return uri, client, client.create_run(experiment).info.run_id


def test_registered_model_samples_like_the_network(store, monkeypatch) -> None:
    uri, client, run_id = store
    net = _cnf()
    x = torch.rand(2, 3, 16, 16)
    version = log_sampling_model(net, run_id, x[:1], "drive_vessel", "cnf", tracking_uri=uri)
    assert version.name == "drive_vessel-cnf" and int(version.version) == 1
    assert client.get_run(run_id).info.status == "RUNNING"  # logging does not end the training run
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run_id, "model")}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # models:/ resolves against it (no global state left)
    served = mlflow.pyfunc.load_model(f"models:/drive_vessel-cnf/{version.version}")
    params = served.metadata.get_params_schema().to_dict()
    assert {p["name"] for p in params} == {"num_samples", "temperature", "seed", "return_samples"}
    out = served.predict(x.numpy(), params={"num_samples": 6, "temperature": 1.0, "seed": 3, "return_samples": True})
    assert out["mean"].shape == out["std"].shape == (2, 1, 16, 16) and out["samples"].shape == (6, 2, 1, 16, 16)
    assert set(np.unique(out["samples"])) <= {0.0, 1.0}  # binary samples, exactly
    np.testing.assert_allclose(out["mean"], out["samples"].mean(0), atol=1e-6)
    # the same seed gives the same samples as the network itself with that generator
    expected = net.sample(x, num_samples=6, temperature=1.0, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(out["samples"], expected.numpy())
    cold = served.predict(x.numpy(), params={"num_samples": 3, "temperature": 0.0})
    assert np.all(cold["std"] == 0) and "samples" not in cold
    np.testing.assert_array_equal(cold["mean"], net(x).numpy())

    factored = FactoredBaseline(2, 3, 1, num_levels=2, hidden_channels=4, conditioner_kwargs={"feature_channels": 4})
    second = log_sampling_model(factored.eval(), run_id, x[:1], "drive_vessel", "factored", "model_factored", uri)
    assert second.name == registered_model_name("drive_vessel", "factored") and int(second.version) == 1


def test_bad_arguments(store) -> None:
    uri, _, run_id = store
    with pytest.raises(ValueError, match="input_example"):
        log_sampling_model(_cnf(), run_id, np.zeros((16, 16)), "drive_vessel", "cnf", tracking_uri=uri)
    with pytest.raises(ValueError, match="non-empty"):
        registered_model_name("", "cnf")
