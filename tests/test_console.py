"""What the commands show: progress as plain lines outside a terminal, -q/-v/--no-progress and
TQDM_DISABLE everywhere, help on every option, one spelling per flag."""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import re
import time
from unittest import mock

import pytest

from storage.console import progress, say, setup_console
from tests.testing import TINY_CLI, run_module


@pytest.fixture
def clean_console(monkeypatch):
    """Leave the environment and the loggers as they were."""
    for var in ("TQDM_DISABLE", "TQDM_MININTERVAL"):  # set then deleted: restored (unset) at the end
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in ("extract", "storage", "temporal", "pipeline")}
    yield monkeypatch
    root.handlers[:], root.level = handlers, level
    for n, lv in levels.items():
        logging.getLogger(n).setLevel(lv)


def test_progress_outside_a_terminal_is_plain_lines(clean_console):
    buf = io.StringIO()  # not a TTY
    bar = progress(range(500), desc="work", unit="it", file=buf)
    for i in bar:
        bar.set_postfix(loss=i)  # as the training loops do: no line of its own
    lines = buf.getvalue().splitlines(keepends=True)
    assert "\r" not in buf.getvalue() and all(line.endswith("\n") for line in lines)
    # 500 quick steps within the 10 s interval: the first line and the final one, nothing between
    assert len(lines) == 2 and lines[0].startswith("work:   0%") and "500/500" in lines[1], lines
    assert "loss=499" in lines[1]
    clean_console.setenv("TQDM_MININTERVAL", "0.1")
    buf = io.StringIO()
    for _ in progress(range(12), desc="slow", file=buf):
        time.sleep(0.05)
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and 3 <= len(lines) <= 9, lines  # ~ one per 0.1 s of 0.6 s
    assert all(re.match(r"slow: +\d+%\|[ #0-9]*\| *\d+/12 \[", line) for line in lines), lines


def test_tqdm_disable_and_no_progress_turn_bars_off(clean_console):
    clean_console.setenv("TQDM_DISABLE", "1")
    buf = io.StringIO()
    assert sum(1 for _ in progress(range(5), file=buf)) == 5 and buf.getvalue() == ""
    clean_console.delenv("TQDM_DISABLE")
    setup_console(argparse.Namespace(quiet=False, verbose=0, progress=False))  # --no-progress
    assert os.environ["TQDM_DISABLE"] == "1"  # for child processes too
    assert sum(1 for _ in progress(range(5), file=buf)) == 5 and buf.getvalue() == ""


def test_quiet_and_verbose_levels(clean_console, capsys):
    setup_console(argparse.Namespace(quiet=True, verbose=0, progress=True))
    assert not logging.getLogger("extract").isEnabledFor(logging.INFO)
    assert logging.getLogger("extract").isEnabledFor(logging.WARNING)
    assert os.environ["TQDM_DISABLE"] == "1"  # -q: no bars either
    clean_console.delenv("TQDM_DISABLE")
    say("note: a report line")
    say("warning: kept under -q")
    assert capsys.readouterr().out == "warning: kept under -q\n"  # temporal's report lines (log=say)
    setup_console(argparse.Namespace(quiet=False, verbose=0, progress=True))
    say("note: a report line")
    assert capsys.readouterr().out == "note: a report line\n"
    assert logging.getLogger("temporal").isEnabledFor(logging.INFO)
    assert not logging.getLogger("timm").isEnabledFor(logging.INFO)  # libraries: warnings only
    setup_console(argparse.Namespace(quiet=False, verbose=1, progress=True))
    assert logging.getLogger("storage").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("timm").isEnabledFor(logging.INFO)
    assert "TQDM_DISABLE" not in os.environ


# ---------------------------------------------------------------------------------------------
# every command line: help on each option, one spelling per flag


class _Parsed(Exception):
    pass


def parser_of(main, argv: list[str]) -> argparse.ArgumentParser:
    """The parser `main(argv)` builds, caught at its parse_args call (nothing is run)."""
    seen = []

    def grab(self, args=None, namespace=None):
        seen.append(self)
        raise _Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", grab), pytest.raises(_Parsed):
        main(argv)
    return seen[0]


def with_subcommands(ap: argparse.ArgumentParser, name: str) -> dict[str, argparse.ArgumentParser]:
    out = {name: ap}
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                out[f"{name} {sub}"] = p
    return out


def every_parser() -> dict[str, argparse.ArgumentParser]:
    import extract.__main__
    import pipeline.__main__
    import storage.__main__
    import temporal.__main__

    parsers = {"python -m extract": extract.__main__.parser()}
    parsers |= with_subcommands(parser_of(storage.__main__.main, []), "python -m storage")
    parsers |= with_subcommands(parser_of(temporal.__main__.main, []), "python -m temporal")
    parsers |= with_subcommands(parser_of(pipeline.__main__.main, []), "python -m pipeline")
    for stage in pipeline.__main__.STAGES:
        module = importlib.import_module(f"pipeline.stages.{stage}")
        parsers[f"python -m pipeline {stage}"] = parser_of(module.main, [])
    return parsers


def test_every_option_has_help_and_one_spelling():
    parsers = every_parser()
    assert len(parsers) >= 19
    spellings: dict[str, set[str]] = {}
    for name, ap in parsers.items():
        for action in ap._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(a.help for a in action._choices_actions), f"{name}: a sub-command without help"
                continue
            flags = [s for s in action.option_strings if s.startswith("--")]
            if not flags:
                continue
            assert action.help, f"{name} {flags[0]}: no help text"
            if isinstance(action, argparse.BooleanOptionalAction):
                flags = flags[:1]  # --x / --no-x: one switch
            assert len(flags) == 1, f"{name}: {flags} spell one option twice"
            assert "_" not in flags[0], f"{name}: {flags[0]} (options are spelt with '-')"
            spellings.setdefault(action.dest, set()).add(flags[0])
    # the same setting is spelt the same way in every command (e.g. no --out beside --output)
    twice = {dest: flags for dest, flags in spellings.items() if len(flags) > 1}
    assert not twice, twice
    assert not {"--output", "--out-dir", "--outdir"} & {f for fl in spellings.values() for f in fl}


def test_temporal_baseline_help_lists_only_what_it_reads(capsys):
    from temporal.__main__ import main

    with pytest.raises(SystemExit):
        main(["baseline", "--help"])
    text = capsys.readouterr().out
    for reads in ("--lr", "--epochs", "--meanpool-hidden", "--meanpool-dropout", "--train-fraction", "--mlp",
                  "--quiet"):
        assert reads in text
    for stan_only in ("--fusion", "--streams", "--clip-len", "--depth-temporal", "--pca-dims", "--init",
                      "--width", "--aux-loss"):
        assert stan_only not in text
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    for reads in ("--streams", "--width", "--frames", "--lr", "--epochs"):
        assert reads in text
    for unread in ("--task", "--train-fraction", "--eval-mode", "--patience", "--monitor", "--aux-loss",
                   "--init", "--meanpool-hidden"):  # labels, evaluation, task loss: pre-training reads none
        assert not re.search(rf"^ +{unread}\b", text, re.M), unread
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--clip-len" in text and "--clip_len" not in text and "-k " not in text
    assert "temporal.stan options:" in text and "temporal.optim options:" in text


# ---------------------------------------------------------------------------------------------
# a real run's log, as a CI sees it


@pytest.mark.slow
def test_extract_log_outside_a_terminal(tmp_path, make_video):
    for i in range(4):
        make_video(f"videos/v{i}.mp4", frames=20, fps=10)
    cli = [a for a in TINY_CLI if a != "--no-progress"]
    proc = run_module("extract", "--videos", tmp_path / "videos", "--out", tmp_path / "c", "--fps", "2", *cli)
    err = proc.stderr
    assert "\r" not in err and "\r" not in proc.stdout
    lines = err.splitlines()
    assert lines[0].startswith("extract: 4 videos, 0 already cached, 4 to extract")
    bars = [line for line in lines if re.match(r"extract: +\d+%\|", line)]
    # a few seconds of work: the first line and the last, at most one more per 10 s
    assert 2 <= len(bars) <= 3 and "4/4" in bars[-1] and len(lines) == 1 + len(bars), err
    assert "4 videos: 4 done" in proc.stdout
    # -q: nothing on stderr but warnings; TQDM_DISABLE: no bars, the log stays
    quiet = run_module("extract", "--videos", tmp_path / "videos", "--out", tmp_path / "q", *cli, "-q")
    assert quiet.stderr == "" and "4 videos: 4 done" in quiet.stdout
    off = run_module("extract", "--videos", tmp_path / "videos", "--out", tmp_path / "o", *cli,
                     env={"TQDM_DISABLE": "1"})
    assert off.stderr.splitlines() == [lines[0].replace("/c;", "/o;").replace(str(tmp_path / "c"),
                                                                               str(tmp_path / "o"))]


def test_temporal_option_help_is_the_config_fields_own_description(capsys):
    """`--help` reads each temporal.Config field's comment, so the code and the help say one thing."""
    from temporal.__main__ import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--event-pairs, --no-event-pairs the event summary also reads, per pair of prototypes" in text
    assert "--batch-size N videos per training step; small: more, noisier steps" in text
    assert "(default 4)" in text
