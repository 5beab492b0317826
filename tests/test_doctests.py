"""Every docstring example in the package runs and gives the output it shows (the examples are documentation;
those of the losses and metrics state the exact definitions)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import tempfile
from pathlib import Path

import pytest

import monai_cnf

EXAMPLES_REQUIRED = ("monai_cnf.losses.", "monai_cnf.metrics.")
MODULES = sorted(m.name for m in pkgutil.walk_packages(monai_cnf.__path__, "monai_cnf.") if not m.ispkg)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # examples that write files write them here
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    public = not name.rsplit(".", 1)[-1].startswith("_")
    if public and name.startswith(EXAMPLES_REQUIRED):  # their examples state the exact definitions: they must be there
        assert result.attempted > 0, f"{name} has no docstring example"
