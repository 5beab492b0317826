"""One-line errors for the ``cnf`` commands (a traceback only with ``cnf --verbose``), and the global options."""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from monai_cnf._quiet import quiet_nvimgcodec
from monai_cnf.bundle.files import BundleError

__all__ = ["STATE", "CLIError", "error_line", "handle_errors", "setup_logging"]

F = TypeVar("F", bound=Callable[..., Any])

#: Global options set by the ``cnf`` callback (``--verbose``).
STATE: dict[str, Any] = {"verbose": os.environ.get("CNF_VERBOSE", "") not in ("", "0")}

_MAX_LINE = 600


class CLIError(BundleError):
    """A user-facing error of the CLI itself: printed as one line; the command exits with ``exit_code``.

    The library raises :class:`~monai_cnf.bundle.BundleError` (printed the same way, exit code 1)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a ``raise ... from`` chain (MONAI wraps config errors in RuntimeErrors)."""
    seen = {id(err)}
    while True:
        nxt = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
        if nxt is None or id(nxt) in seen:
            return err
        seen.add(id(nxt))
        err = nxt


def error_line(err: BaseException) -> str:
    """One line describing ``err``: a ``CLIError``'s message, else the root cause as ``Type: message``.

    >>> error_line(ValueError("bad\\n  value"))
    'ValueError: bad value'
    """
    if not isinstance(err, BundleError):
        root = _root_cause(err)
        if isinstance(root, BundleError):
            err = root
        else:
            msg = str(root) or repr(root)
            if isinstance(root, KeyError):  # str(KeyError) is the quoted key
                msg = f"missing key {msg}"
            text = f"{type(root).__name__}: {msg}"
            return _one_line(text)
    return _one_line(_as_options(str(err)))


def _as_options(text: str) -> str:
    """The library's backticked argument names as this CLI's options.

    >>> _as_options("pass `resume` or choose another `run_dir`")
    'pass --resume or choose another --run-dir'
    """
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: "--" + m.group(1).replace("_", "-"), text)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 3] + "..."


def handle_errors(func: F) -> F:
    """Run a command; on failure print ``Error: <one line>`` to stderr and exit non-zero (re-raise with --verbose)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            typer.secho("Error: interrupted.", fg=typer.colors.RED, err=True)
            raise typer.Exit(130) from None
        except Exception as err:
            if STATE["verbose"]:
                raise
            typer.secho(f"Error: {error_line(err)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(err.exit_code if isinstance(err, CLIError) else 1) from None

    return wrapper  # type: ignore[return-value]


#: Loggers that MONAI and MLflow give their own stdout/stderr handler and format: their lines go through Rich too.
OWN_FORMAT_LOGGERS = ("monai.handlers.StatsHandler", "mlflow")


def _one_log_style(handler: logging.Handler) -> None:
    """Route the loggers that format for themselves through ``handler``, so a run prints one log style.

    MONAI's ``StatsHandler`` (the "Epoch[3] Metrics -- val_max_f: ..." lines) logs through
    ``monai.apps.get_logger``, which adds a plain stdout handler only to a logger that does not exist yet: created
    here first, with Rich's handler, it keeps that one. MLflow configures its own handler when it is imported
    (``MLFLOW_CONFIGURE_LOGGING``, switched off here for the imports to come); if it was imported already, its
    handlers are replaced. Both stay at INFO / their level; nothing is silenced.
    """
    import os
    import sys

    from rich.logging import RichHandler

    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    for name in OWN_FORMAT_LOGGERS:
        if name == "mlflow" and "mlflow" not in sys.modules:
            continue  # MLflow will not configure it (environment above): it propagates to the root's Rich handler
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, (RichHandler, FileLogHandler)) or type(h) is logging.StreamHandler:
                lg.removeHandler(h)
        lg.addHandler(handler)
        lg.propagate = False
        if name == "monai.handlers.StatsHandler":
            lg.setLevel(logging.INFO)  # what MONAI's get_logger sets


class FileLogHandler(logging.StreamHandler):
    """Rich's log style as plain text, one line per record, for a stderr that is a file or pipe.

    Rich lays a record out as a table as wide as the console: off a terminal that is 80 columns, which folds each
    "Epoch[3] Metrics -- ..." record of a background training (``nohup cnf train ... > train.log``) over several
    lines and breaks ``grep``; a wider console pads every line with spaces. Same fields as Rich's, no layout.
    The stream is looked up at each record, so a redirected ``sys.stderr`` is honoured.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)-8s %(message)s", "%m/%d/%y %H:%M:%S"))

    @property  # type: ignore[override]
    def stream(self):  # the logging API's attribute
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # set by StreamHandler.__init__; ignored, stderr is used
        pass


def _log_handler(verbose: bool) -> logging.Handler:
    """Rich's handler on a terminal; :class:`FileLogHandler` when stderr is a file or pipe (``COLUMNS`` unset)."""
    import os
    import sys

    if not os.environ.get("COLUMNS") and not (sys.stderr is not None and sys.stderr.isatty()):
        return FileLogHandler()
    from rich.console import Console
    from rich.logging import RichHandler

    return RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=verbose)


def setup_logging(verbose: bool) -> None:
    """Rich log lines on stderr: INFO for monai_cnf (e.g. "no dataset_dir: training on synthetic data"),
    WARNING for other libraries; everything at INFO with ``--verbose``."""
    from rich.logging import RichHandler

    handler = _log_handler(verbose)
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, (RichHandler, FileLogHandler)):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("monai_cnf").setLevel(logging.INFO)
    _one_log_style(handler)
    quiet_nvimgcodec()  # any bundle's LoadImage, not only one using monai_cnf.data.image_readers
    if not verbose:
        import warnings

        # set-up chatter that says nothing about the run
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message="tqdm is not installed")
