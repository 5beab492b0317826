"""``python -m monai_cnf.cli``: the ``cnf`` command."""

from monai_cnf.cli.main import app

app(prog_name="cnf")
