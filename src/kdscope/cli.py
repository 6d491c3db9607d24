"""The ``kdscope`` command line."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from kdscope.errors import KdscopeError

EPILOG = """examples:
  kdscope run --preset default --out runs/default   train and analyse the embedded default study
  kdscope run my_study.yaml --out runs/mine          a study of your own (see 'kdscope show default')
  kdscope show smoke                                 print a preset's YAML, to copy and edit
  kdscope list methods                               registered methods (also: models, datasets,
                                                     analyses, presets)
  kdscope check-teacher --preset three_levels --out runs/levels
                                                     train only the teacher and check it before
                                                     distilling (relations, confidence)
  kdscope bench training                             cost of trajectory logging and teacher caching
  kdscope bench knowledge-points                     fast vs reference knowledge-point estimator
  kdscope bench verdicts                             calibration of the verdicts in null studies

A run killed at any point resumes where it stopped when the same command is run again."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kdscope",
        description="Explain knowledge distillation: train a teacher, a baseline and distilled "
        "students, and measure what knowledge moved.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run (or resume) a study",
        description="Train every model of a "
        "study (resuming finished or interrupted runs), run its analyses and write "
        "summary.json and report.html into --out.",
    )
    run.add_argument("study", nargs="?", help="study YAML file (or use --preset)")
    run.add_argument("--preset", help="name of an embedded study (see 'kdscope list presets')")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

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
    check.add_argument("--out", required=True, help="the study's output directory")
    check.add_argument("--tau", type=float, default=4.0, help="distillation temperature (4)")
    check.add_argument("--lam", type=float, default=0.7, help="weight of the soft term (0.7)")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    show = sub.add_parser("show", help="print a preset's YAML")
    show.add_argument("preset")

    bench = sub.add_parser("bench", help="measure kdscope's costs side by side (prints ratios)")
    bench.add_argument(
        "name",
        choices=["training", "knowledge-points", "verdicts"],
        help="training: cost of trajectory logging and teacher caching; knowledge-points: fast "
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
    return p


def _config(args: argparse.Namespace):  # noqa: ANN202
    from kdscope.config import load_preset, load_study

    if bool(args.study) == bool(args.preset):
        raise KdscopeError("give either a study file or --preset NAME (not both)")
    return load_preset(args.preset) if args.preset else load_study(args.study)


def _check_teacher(args: argparse.Namespace) -> int:
    from kdscope import io
    from kdscope.analyses.teacher_check import check_teacher, format_check
    from kdscope.study import run_study

    if args.tau <= 0 or not 0 <= args.lam <= 1:
        raise KdscopeError("--tau must be positive and --lam in [0, 1]")
    study = run_study(_config(args), args.out, quiet=args.quiet, teacher_only=True)
    result = check_teacher(
        study.teacher_model, study.student_data.train, study.data.test, args.tau, args.lam
    )
    io.write_json(study.out_dir / "teacher_check.json", result)
    print(format_check(result, f"{study.config.name} (τ = {args.tau:g}, λ = {args.lam:g})"))
    return 0


def _run(args: argparse.Namespace) -> int:
    from kdscope.study import run_study

    run_study(_config(args), args.out, quiet=args.quiet)
    if not args.quiet:
        print(f"wrote {args.out}/summary.json and {args.out}/report.html")
    return 0


def _list(what: str) -> int:
    from kdscope.analyses import ANALYSES
    from kdscope.config import preset_names
    from kdscope.datasets import DATASETS
    from kdscope.methods import METHODS
    from kdscope.models import MODELS

    names = {
        "models": MODELS.names,
        "methods": METHODS.names,
        "datasets": DATASETS.names,
        "analyses": ANALYSES.names,
        "presets": preset_names,
    }[what]()
    print("\n".join(names))
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
    return _list(args.what)


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
        from kdscope.study import os_error_text

        return _error(os_error_text(e))
    except MemoryError:
        return _error("out of memory; try a smaller study (fewer or smaller models or examples)")
    except KeyboardInterrupt as e:
        print("kdscope: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
