"""Run the docstring examples of the losses and metrics modules (they document the exact definitions)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "monai_cnf.losses.functional",
    "monai_cnf.losses.flow_nll",
    "monai_cnf.losses.bernoulli",
    "monai_cnf.losses.logistic",
    "monai_cnf.metrics.likelihood",
    "monai_cnf.metrics.segmentation",
    "monai_cnf.metrics.calibration",
    "monai_cnf.metrics.image",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
