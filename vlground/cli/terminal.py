"""A quiet terminal: log levels, each warning once, no third-party loading bars.

``vlground`` prints warnings and errors by default; ``-v`` adds INFO, ``-vv`` DEBUG. A warning
whose text was already shown in this process is not shown again (tests and library users who
call :func:`configure` get the same). transformers' and huggingface_hub's own progress bars
("Loading weights", downloads) are switched off, so the only bars are vlground's, one per long
step; their own warnings are shown at the ERROR level unless ``-vv``.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings

#: third-party loggers kept at ERROR unless -vv (their INFO/WARNING chatter is not the user's business)
NOISY = ("transformers", "huggingface_hub", "accelerate", "diffusers", "matplotlib", "PIL", "urllib3", "filelock")


class OnceFilter(logging.Filter):
    """Lets a (logger, level, message) through the first time only."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"vlground: {record.levelname.lower()}: {record.getMessage()}"
        if record.levelno == logging.INFO:
            return record.getMessage()
        return super().format(record)


def quiet_third_party(verbosity: int = 0) -> None:
    """Switch off transformers / huggingface_hub progress bars and their below-ERROR logs.

    When transformers is not imported yet (a command that may never need it: ``vlground list``,
    ``check-adapter NAME --help``), this sets the environment variables both libraries read when
    they are imported (``TRANSFORMERS_VERBOSITY``, ``HF_HUB_DISABLE_PROGRESS_BARS``; a value the
    user set is kept) instead of importing them."""
    level = logging.DEBUG if verbosity >= 2 else logging.ERROR
    for name in NOISY:
        logging.getLogger(name).setLevel(level)
    if "transformers" not in sys.modules and "huggingface_hub" not in sys.modules:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "debug" if verbosity >= 2 else "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return
    try:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity(level)
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass


def configure(verbosity: int = 0) -> None:
    """Root logging for the command line: WARNING (0), INFO (1), DEBUG (2+); each warning once."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Format("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(OnceFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_vlground", False):
            root.removeHandler(h)
    handler._vlground = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    logging.captureWarnings(True)
    # python warnings: once per place, routed through logging above; appended, so filters already set
    # (python -W, PYTHONWARNINGS, pytest's filterwarnings that turn vlground's warnings into errors) still win
    warnings.simplefilter("default", append=True)
    quiet_third_party(verbosity)
