"""The CLI's log lines stay whole when they go to a file (a background `cnf train ... > train.log`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

SCRIPT = """
import logging
from monai_cnf.cli._errors import setup_logging
setup_logging(False)
record = "Epoch[3] Metrics -- " + " ".join(f"m{i}: 0.{i:04d}" for i in range(12))
logging.getLogger("monai.handlers.StatsHandler").info(record)
"""


def _stderr_lines(env: dict[str, str]) -> list[str]:
    cmd = [sys.executable, "-c", SCRIPT]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=True)
    return [line for line in out.stderr.splitlines() if line.strip()]


def test_a_log_record_is_one_line_in_a_file() -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    lines = _stderr_lines(env)
    # 20 + 12 * 11 characters of message: Rich's 80-column default folds it over three lines
    assert len(lines) == 1, lines
    # Rich's fields (time, level, message), no table layout: nothing padded, nothing folded
    rich_fields = r"\[\d\d/\d\d/\d\d \d\d:\d\d:\d\d\] INFO     "
    assert re.fullmatch(rich_fields + r"Epoch\[3\] Metrics -- m0: .* m11: 0\.0011", lines[0]), lines


def test_columns_still_sets_the_width() -> None:
    lines = _stderr_lines({**os.environ, "COLUMNS": "80"})
    assert len(lines) > 1, lines
