"""What a command shows: log levels (-q/-v) and progress bars that suit a terminal and a CI log alike.

Every command line of the project (extract, temporal, storage, the pipeline stages) adds
`console_options` to its parser and calls `setup_console` on the parsed arguments; every
progress bar comes from `progress`. In a terminal that is a tqdm bar updated in place; anywhere
else (a CI log, a file, a pipe) it is one plain line every ~10 s (TQDM_MININTERVAL seconds),
never a carriage return. TQDM_DISABLE=1 or --no-progress turns the bars off, in child
processes too (the flag sets the variable).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

# the project's own loggers: INFO by default; the libraries' only from -v on
PACKAGES = ("extract", "storage", "temporal", "pipeline")
PLAIN_INTERVAL = 10.0  # seconds between two progress lines when not in a terminal


def console_options(parser: argparse.ArgumentParser) -> None:
    """Add -q/--quiet, -v/--verbose and --no-progress (one group, same spelling in every command)."""
    g = parser.add_argument_group("console")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="warnings and errors only (and no progress bars)")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more detail: -v debug messages of this project and the libraries' info, "
                        "-vv everything")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (as TQDM_DISABLE=1 does)")


def setup_console(args: argparse.Namespace) -> None:
    """Configure logging to stderr and the progress switch from `console_options`' arguments."""
    verbosity = -1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0)
    setup_logging(verbosity)
    if verbosity < 0 or not getattr(args, "progress", True):
        os.environ["TQDM_DISABLE"] = "1"  # children (decoders, dask workers) inherit it


def setup_logging(verbosity: int = 0) -> None:
    """-1: warnings; 0: this project's info, plain messages; 1: its debug and the libraries'
    info, with time, level and logger name; 2: everything."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(message)s" if verbosity < 1 else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING)
    ours = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    for name in PACKAGES:
        logging.getLogger(name).setLevel(ours)


def say(msg: str) -> None:
    """Print a line of a command's report on stdout (what temporal's `log=` takes); after
    `setup_console`, -q keeps only the warnings."""
    if msg.startswith("warning") or logging.getLogger("temporal").isEnabledFor(logging.INFO):
        print(msg, flush=True)


def progress_disabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


class _Lines:
    """A file for tqdm that turns each in-place redraw ('\\r' + status) into one plain line."""

    def __init__(self, file: TextIO):
        self.file = file

    def write(self, s: str) -> None:
        text = s.replace("\r", "").rstrip()
        if text:
            self.file.write(text + "\n")

    def flush(self) -> None:
        self.file.flush()


class _PlainBar(tqdm):
    """tqdm whose postfix and description changes wait for the next due line instead of printing
    one each (a redraw is free in a terminal, a line in a log is not)."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=False)


def progress(iterable: Iterable | None = None, *, enabled: bool = True, file: TextIO | None = None,
             **kw: Any):
    """A tqdm bar (`kw` as tqdm takes them); off when `enabled` is False or TQDM_DISABLE is set.

    Not in a terminal: ASCII, at most one line per TQDM_MININTERVAL (default 10) seconds.
    """
    file = file or sys.stderr
    if not enabled or progress_disabled():
        return tqdm(iterable, disable=True, **kw)
    if getattr(file, "isatty", lambda: False)():
        return tqdm(iterable, file=file, dynamic_ncols=True, **kw)
    interval = float(os.environ.get("TQDM_MININTERVAL") or PLAIN_INTERVAL)
    return _PlainBar(iterable, file=_Lines(file), mininterval=interval, maxinterval=max(interval, 10.0),
                     ascii=True, ncols=100, **kw)
