"""Keep a service's output to tunelab's own lines.

The server and its workers run for days; the deprecation notices that transformers, PEFT and
PyTorch print about each other (nothing a tunelab user can act on) and the libraries' progress
bars (carriage-return redraws that garble a log file) are turned off there. The interactive CLI
keeps its own rich progress bars either way.
"""

from __future__ import annotations

import logging
import os
import warnings

LIBRARIES = r"(transformers|peft|torch|accelerate)(\..*)?"


def silence_library_warnings() -> None:
    """Every tunelab command: no deprecation notices the libraries print about each other."""
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES)


def quiet_libraries() -> None:
    """Call once at the start of a service process (``serve``, ``worker``)."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    silence_library_warnings()
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("alembic", "transformers", "peft"):
        logging.getLogger(name).setLevel(logging.WARNING)


def end_quickly() -> None:
    """Call as a process's work is done, just before it exits: the objects alive now
    (every imported library's modules, classes and tables) are left to the operating system
    instead of being examined by the interpreter's final garbage collection, which took
    ~1.3 s of a server's or worker's stop after a job had run, and of every CLI command that
    had loaded a model (``gc.freeze``; exit handlers still run, and every object outside a
    reference cycle is still freed, files flushed and closed as before)."""
    import gc

    gc.freeze()
