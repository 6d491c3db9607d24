"""The ``kdscope`` command line."""

from __future__ import annotations

import argparse
import inspect
import json
import re
import signal
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path
from types import FrameType
from typing import Any

from kdscope import __version__
from kdscope.errors import KdscopeError
from kdscope.summary_table import clip, format_summary

EPILOG = """examples:
  kdscope run --preset default                       train and analyse the embedded default study
                                                     (into runs/default, the study's name)
  kdscope run my_study.yaml --out runs/mine          a study of your own (see 'kdscope show default')
  kdscope show smoke                                 print a preset's YAML, to copy and edit
  kdscope list methods                               registered methods, what they do and their
                                                     parameters (also: models, datasets, analyses,
                                                     presets)
  kdscope list methods kd                            only the methods whose name contains 'kd'
  kdscope run my_study.yaml --import my_models       register your own datasets, models, methods
                                                     or analyses first (or 'imports:' in the file)
  kdscope check-teacher --preset three_levels --out runs/levels
                                                     train only the teacher and check it before
                                                     distilling (relations, confidence)
  kdscope run my_study.yaml --workers 4              its jobs on 4 worker processes (same numbers
                                                     at the same --threads; see docs/scaling.md)
  kdscope run my_study.yaml --executor ray --device cuda
                                                     on a Ray cluster's GPUs (pip install 'kdscope[ray]')
  kdscope bench training                             cost of trajectory logging and teacher caching
  kdscope bench knowledge-points                     fast vs reference knowledge-point estimator
  kdscope bench verdicts                             calibration of the verdicts in null studies

A run killed at any point resumes where it stopped when the same command is run again."""

OUT_HELP = "output directory (default: runs/<the study's name>)"
IMPORT_HELP = (
    "import this Python module (a dotted name, found from the current folder) before the study "
    "is read, so that the datasets, models, methods and analyses it registers can be named; "
    "repeatable"
)
#: characters of a line of 'kdscope list'
LIST_WIDTH = 100


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kdscope",
        description="Explain knowledge distillation: train a teacher, a baseline and distilled "
        "students, and measure what knowledge moved.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run (or resume) a study",
        description="Train every model of a "
        "study (resuming finished or interrupted runs), run its analyses, write "
        "summary.json and report.html into --out and print a table of the results.",
    )
    run.add_argument("study", nargs="?", help="study YAML file (or use --preset)")
    run.add_argument("--preset", help="name of an embedded study (see 'kdscope list presets')")
    run.add_argument("--out", help=OUT_HELP)
    run.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    _execution_options(run)
    _import_option(run)

    check = sub.add_parser(
        "check-teacher",
        help="train (or load) a study's teacher and check it before distilling",
        description="Train only the teacher of a study (or load it from --out), then report what "
        "each level of its knowledge carries and flag a relation-free (D1), over-confident (D2) "
        "or uninformative (D3) teacher. Writes teacher_check.json into --out; exits 0 whether "
        "or not a flag is raised.",
    )
    check.add_argument("study", nargs="?", help="study YAML file (or use --preset)")
    check.add_argument("--preset", help="name of an embedded study")
    check.add_argument("--out", help=OUT_HELP)
    check.add_argument("--tau", type=float, default=4.0, help="distillation temperature (4)")
    check.add_argument("--lam", type=float, default=0.7, help="weight of the soft term (0.7)")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _execution_options(check)
    _import_option(check)

    show = sub.add_parser("show", help="print a preset's YAML")
    show.add_argument("preset")

    bench = sub.add_parser("bench", help="measure kdscope's costs side by side (prints ratios)")
    bench.add_argument(
        "name",
        choices=[
            "training",
            "training-overhead",
            "knowledge-points",
            "verdicts",
            "executor",
            "device",
        ],
        help="training: cost of trajectory logging and teacher caching; training-overhead: "
        "a training run against a hand-written PyTorch loop (exits 1 above 1.10x); executor: "
        "the smoke study in one process and on a process pool, speed-up and identical "
        "summaries (exits 1 below 1.6x or if they differ); device: the GPU checks (skipped "
        "without a CUDA GPU); knowledge-points: fast "
        "vs reference information discarding, input by input, on a trained teacher, baseline and "
        "student at every diagnosed layer (exits 1 if a gate fails); verdicts: false-"
        "positive rate of the verdict intervals in simulated null studies, and their power "
        "(exits 1 if a rate exceeds the nominal 5 %% by more than 0.01)",
    )
    bench.add_argument("--repeats", type=int, help="timings per variant (median kept)")
    bench.add_argument("--studies", type=int, help="verdicts: null studies per row (4000)")

    lst = sub.add_parser(
        "list", help="list registered models, methods, datasets, analyses or presets"
    )
    lst.add_argument("what", choices=["models", "methods", "datasets", "analyses", "presets"])
    lst.add_argument("filter", nargs="?", default="", help="only names containing this text")
    _import_option(lst)
    return p


def _execution_options(parser: argparse.ArgumentParser) -> None:
    """``--executor``, ``--workers``, ``--threads`` and ``--device``: where the study's jobs
    run (they replace the study file's ``executor`` and ``device``)."""
    parser.add_argument(
        "--executor",
        choices=["local", "processes", "ray"],
        help="where the jobs (trainings, knowledge-point maps, retrainings) run: local (this "
        "process, one after another), processes (a pool of local worker processes) or ray (a "
        "Ray cluster; pip install 'kdscope[ray]'); default: the study's 'executor', else local",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="worker processes of the processes executor (default: one per core; implies "
        "--executor processes)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        help="torch threads per job (default: 1 in worker processes, torch's choice in this "
        "process); results are bit-identical at the same count, which summary.json records",
    )
    parser.add_argument(
        "--device",
        metavar="DEVICE",
        help="auto (CUDA when available), cpu, cuda or cuda:N (default: the study's, else auto)",
    )


def _positive(text: str) -> int:
    """An integer >= 1, for argparse."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _executing(cfg: Any, args: argparse.Namespace) -> Any:  # noqa: ANN401  (a StudyConfig)
    """The study with the command line's execution options (:func:`_execution_options`)."""
    return cfg.executing(args.executor, args.workers, args.threads, args.device)


def _import_option(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE`` (repeatable) on a subcommand that reads the registries."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help=IMPORT_HELP,
    )


def _user_code(args: argparse.Namespace) -> None:
    """Load the installed plugins, then the modules given by ``--import`` (the current folder
    first on ``sys.path``, as ``python -m`` would have it), before any study is read."""
    from kdscope.errors import ConfigError
    from kdscope.plugins import import_modules, load_plugins

    load_plugins()
    try:
        import_modules(getattr(args, "imports", []), Path.cwd())
    except ConfigError as e:
        raise KdscopeError(f"--import: {str(e).removeprefix('imports: ')}") from None


def _config(args: argparse.Namespace):  # noqa: ANN202
    from kdscope.config import load_preset, load_study

    if bool(args.study) == bool(args.preset):
        raise KdscopeError("give either a study file or --preset NAME (not both)")
    return load_preset(args.preset) if args.preset else load_study(args.study)


def _out_dir(args: argparse.Namespace, name: str) -> str | Path:
    """The study's output folder: ``--out`` as given (an empty one is refused later), else
    ``runs/<name>``; announced unless quiet."""
    from kdscope.config import _SAFE_NAME

    if args.out is None and not _SAFE_NAME.fullmatch(name):
        raise KdscopeError(f"the study's name {name!r} is not a folder name; give --out")
    out = Path("runs") / name if args.out is None else args.out
    if not args.quiet:
        print(f"study {name}: writing into {out}", flush=True)
    return out


def _check_teacher(args: argparse.Namespace) -> int:
    from kdscope import io
    from kdscope.analyses.teacher_knowledge.teacher_check import check_teacher, format_check
    from kdscope.executor import pinned_threads
    from kdscope.pipeline import run_study

    if args.tau <= 0 or not 0 <= args.lam <= 1:
        raise KdscopeError("--tau must be positive and --lam in [0, 1]")
    cfg = _executing(_config(args), args)
    study = run_study(cfg, _out_dir(args, cfg.name), quiet=args.quiet, teacher_only=True)
    with pinned_threads(study.executor.job_threads()):  # the study's numbers: its jobs' threads
        result = check_teacher(
            study.teacher_model, study.student_data.train, study.data.test, args.tau, args.lam
        )
    io.write_json(study.out_dir / "teacher_check.json", result)
    print(format_check(result, f"{study.config.name} (τ = {args.tau:g}, λ = {args.lam:g})"))
    if not args.quiet:
        print(f"wrote {study.out_dir / 'teacher_check.json'}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from kdscope.pipeline import format_timings, run_study

    cfg = _executing(_config(args), args)
    out = run_study(cfg, _out_dir(args, cfg.name), quiet=args.quiet).out_dir
    if not args.quiet:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        print(format_summary(summary, str(out / "report.html")))
        timings = json.loads((out / "timings.json").read_text(encoding="utf-8"))
        print(f"{format_timings(timings)} (timings.json)")
        print(f"wrote {out / 'summary.json'} and {out / 'report.html'}")
    return 0


def _first_sentence(text: str) -> str:
    """The first sentence of ``text``'s first paragraph, on one line, without rST quotes."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph)[0].replace("``", "")


def _description(obj: Any) -> str:  # noqa: ANN401  (any registered constructor)
    """What a registered constructor is: its docstring, else its ``title``, else its module's
    docstring (first sentence)."""
    doc = obj.__doc__ or getattr(obj, "title", "") or sys.modules[obj.__module__].__doc__
    return _first_sentence(doc or "")


def _parameters(obj: Any) -> str:  # noqa: ANN401  (any registered constructor)
    """The constructor's named parameters, with their defaults."""
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return ", ".join(
        p.name if p.default is p.empty else f"{p.name}={p.default!r}"
        for p in inspect.signature(obj).parameters.values()
        if p.kind not in skip
    )


def _preset_description(name: str) -> str:
    """The first sentence of the comment that opens the preset's YAML."""
    from kdscope.config import preset_path

    lines = preset_path(name).read_text(encoding="utf-8").splitlines()
    return _first_sentence(
        " ".join(line.lstrip("# ") for line in takewhile(lambda line: line.startswith("#"), lines))
    )


def _entries(what: str) -> list[tuple[str, str, str]]:
    """Name, description and parameters of everything registered of one kind."""
    from kdscope.analyses import ANALYSES
    from kdscope.config import preset_names
    from kdscope.datasets import DATASETS
    from kdscope.methods import METHODS
    from kdscope.models import MODELS

    if what == "presets":
        return [(n, _preset_description(n), "") for n in preset_names()]
    registry = {"models": MODELS, "methods": METHODS, "datasets": DATASETS, "analyses": ANALYSES}
    found = registry[what]
    return [(n, _description(found.get(n)), _parameters(found.get(n))) for n in found.names()]


def _list(what: str, text: str) -> int:
    """Print the registered ``what`` whose names contain ``text``: name and description, then
    the parameters (indented)."""
    entries = [e for e in _entries(what) if text in e[0]]
    if not entries:
        raise KdscopeError(f"no {what} contain {text!r}; 'kdscope list {what}' lists them all")
    width = max(len(name) for name, _, _ in entries) + 2
    for name, description, params in entries:
        print(f"{name.ljust(width)}{clip(description, max(LIST_WIDTH - width, 40))}".rstrip())
        if params:
            print(
                textwrap.fill(
                    params,
                    LIST_WIDTH,
                    initial_indent=" " * width,
                    subsequent_indent=" " * width,
                    break_long_words=False,
                )
            )
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the process is, as Ctrl-C raises KeyboardInterrupt."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler."""
    raise _Terminated


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a command runs, SIGTERM stops it as Ctrl-C does: no half-written file, the study
    folder's lock released, and the same command resumes. Outside the main thread (where no
    handler can be set) SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; returns its exit code."""
    if args.command in ("run", "check-teacher", "list", "show"):
        _user_code(args)
    if args.command == "run":
        return _run(args)
    if args.command == "check-teacher":
        return _check_teacher(args)
    if args.command == "show":
        from kdscope.config import load_preset, preset_path

        load_preset(args.preset)
        print(preset_path(args.preset).read_text(encoding="utf-8"), end="")
        return 0
    if args.command == "bench":
        from kdscope.bench import BENCHMARKS, format_rows

        options = {k: v for k, v in (("repeats", args.repeats), ("studies", args.studies)) if v}
        rows = BENCHMARKS[args.name](**options)
        print(format_rows(rows))
        failed = any(
            r.get("calibrated") is False or str(r.get("gate", "")).startswith("fail") for r in rows
        )
        return 1 if failed else 0
    return _list(args.what, args.filter)


def _error(message: str) -> int:
    """Print ``message`` as the one-line error of a failed command; returns its exit code."""
    print(f"kdscope: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: user errors and faults of the environment (files, disk, memory) are one
    line on stderr and exit 2; an interruption (Ctrl-C, SIGTERM) exits 128 + the signal."""
    args = _parser().parse_args(argv)
    try:
        with _sigterm_interrupts():
            return _dispatch(args)
    except KdscopeError as e:
        return _error(str(e))
    except OSError as e:
        from kdscope.runs import os_error_text

        return _error(os_error_text(e))
    except MemoryError:
        return _error("out of memory; try a smaller study (fewer or smaller models or examples)")
    except KeyboardInterrupt as e:
        print("kdscope: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
