"""The ``kdscope`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kdscope.errors import KdscopeError

EPILOG = """examples:
  kdscope run --preset default --out runs/default   train and analyse the embedded default study
  kdscope run my_study.yaml --out runs/mine          a study of your own (see 'kdscope show default')
  kdscope show smoke                                 print a preset's YAML, to copy and edit
  kdscope list methods                               registered methods (also: models, datasets,
                                                     analyses, presets)
  kdscope bench training                             cost of trajectory logging and teacher caching
  kdscope bench knowledge-points                     fast vs reference knowledge-point estimator

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

    show = sub.add_parser("show", help="print a preset's YAML")
    show.add_argument("preset")

    bench = sub.add_parser("bench", help="measure kdscope's costs side by side (prints ratios)")
    bench.add_argument(
        "name",
        choices=["training", "knowledge-points"],
        help="training: cost of trajectory logging and teacher caching; knowledge-points: fast "
        "vs reference information discarding (speed ratio and agreement)",
    )
    bench.add_argument("--repeats", type=int, help="timings per variant (median kept)")

    lst = sub.add_parser(
        "list", help="list registered models, methods, datasets, analyses or presets"
    )
    lst.add_argument("what", choices=["models", "methods", "datasets", "analyses", "presets"])
    return p


def _run(args: argparse.Namespace) -> int:
    from kdscope.config import load_preset, load_study
    from kdscope.study import run_study

    if bool(args.study) == bool(args.preset):
        raise KdscopeError("give either a study file or --preset NAME (not both)")
    cfg = load_preset(args.preset) if args.preset else load_study(args.study)
    run_study(cfg, args.out, quiet=args.quiet)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "show":
            from kdscope.config import PRESET_DIR, load_preset

            load_preset(args.preset)
            print((PRESET_DIR / f"{args.preset}.yaml").read_text(encoding="utf-8"), end="")
            return 0
        if args.command == "bench":
            from kdscope.bench import BENCHMARKS, format_rows

            options = {} if args.repeats is None else {"repeats": args.repeats}
            print(format_rows(BENCHMARKS[args.name](**options)))
            return 0
        return _list(args.what)
    except KdscopeError as e:
        print(f"kdscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdscope: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
