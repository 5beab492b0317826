"""Package discovery that pyproject.toml alone cannot express.

The Typer app lives in the top-level folder ``cli/`` (as DESIGN.md asks) but is installed as
``monai_cnf.cli``; no top-level module named ``cli`` must land in site-packages. ``package_dir`` maps
the subpackage onto the folder; this works for plain and editable installs.
"""

from setuptools import find_packages, setup

core = find_packages(include=["monai_cnf", "monai_cnf.*"])
cli = ["monai_cnf.cli" + p[len("cli") :] for p in find_packages(include=["cli", "cli.*"])]

setup(packages=core + cli, package_dir={"monai_cnf.cli": "cli"})
