"""The ``cnf`` command line (Typer + Rich), installed as ``monai_cnf.cli``. No training logic lives here."""
