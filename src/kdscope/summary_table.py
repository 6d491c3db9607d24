"""The results of a study at a glance: a short, aligned table printed at the end of a run.

It reads only ``summary.json``: the guards (``read this first``), the test accuracy of every
model group (mean, 95 % interval, range over seeds, and the difference to the baseline with its
verdict) and the analyses' headline verdicts: the knowledge-point hypotheses, the property
analyses' ``verdicts`` records, the three-levels claims and the property-claims counts. The full
story is in ``report.html``; the table stops at :data:`MAX_LINES`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

#: lines of the table, the "see report.html" line included
MAX_LINES = 40
#: characters of a line, beyond which it ends in "…"
MAX_WIDTH = 120
#: characters of a finding or claim in the verdicts part
FINDING_WIDTH = 48
#: between the items of a cell (each student's verdict), where a long cell may wrap
SEPARATOR = "; "


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in "…" when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(x: float | None, signed: bool = False) -> str:
    """A number to three decimals; "-" when missing or NaN."""
    if x is None or math.isnan(x):
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _interval(summary: Mapping[str, Any], signed: bool = False) -> str:
    """The 95 % interval of a :func:`kdscope.stats.summarise` record, "-" when undefined."""
    low, high = summary.get("ci95") or (None, None)
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "-"
    return f"[{_num(low, signed)}, {_num(high, signed)}]"


def _pack(text: str, width: int) -> list[str]:
    """``text``, a list of items separated by ``"; "``, as lines of at most ``width``
    characters, broken only between items."""
    lines = [""]
    for item in text.split(SEPARATOR):
        joined = f"{lines[-1]}{SEPARATOR}{item}" if lines[-1] else item
        if len(joined) <= width or not lines[-1]:
            lines[-1] = joined
        else:
            lines.append(item)
    return lines


def _aligned(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """``rows`` as lines with every column but the last padded to its widest cell; the last
    column wraps (between items) to keep lines within :data:`MAX_WIDTH`."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)] if rows else []
    lines = []
    for r in rows:
        head = indent + "".join(c.ljust(w + 2) for c, w in zip(r[:-1], widths, strict=True))
        body = _pack(r[-1], max(MAX_WIDTH - len(head), FINDING_WIDTH))
        lines += [(head + body[0]).rstrip(), *(" " * len(head) + b for b in body[1:])]
    return lines


def guard_lines(guards: Sequence[Mapping[str, Any]]) -> list[str]:
    """One "read this first" line per kind of guard (the first message, and how many)."""
    kinds: dict[str, list[Mapping[str, Any]]] = {}
    for g in guards:
        kinds.setdefault(g["guard"], []).append(g)
    lines = []
    for kind, found in kinds.items():
        times = f" (×{len(found)})" if len(found) > 1 else ""
        lines.append(f"  ! {kind}{times}: {found[0]['message']}")
    return ["read this first:", *lines] if lines else []


def accuracy_lines(accuracy: Mapping[str, Any]) -> list[str]:
    """Per model group: test accuracy (mean, 95 % interval, range over seeds) and the difference
    to its baseline with the verdict."""
    groups = accuracy.get("groups", {})
    if not groups:
        return []
    rows = [["model", "test acc", "95 % interval", "seeds (n)", "vs baseline"]]
    for name, g in groups.items():
        seeds = list(g["per_seed"].values())
        spread = f"{min(seeds):.3f}…{max(seeds):.3f}" if len(seeds) > 1 else f"{seeds[0]:.3f}"
        rows.append([name, _num(g["mean"]), _interval(g), f"{spread} ({len(seeds)})"])
        rows[-1].append(_difference(accuracy.get("student_minus_baseline", {}).get(name)))
    return [f"test accuracy ({accuracy.get('n_test', '?')} inputs):", *_aligned(rows)]


def _difference(diff: Mapping[str, Any] | None) -> str:
    """A student's accuracy minus its baseline's: mean, 95 % interval and verdict ("" if none)."""
    if diff is None:
        return ""
    return f"{_num(diff['mean'], True)} {_interval(diff, True)} {diff.get('verdict', '')}".rstrip()


def _knowledge_point_rows(result: Mapping[str, Any]) -> Iterator[list[str]]:
    """Per layer and hypothesis: each student's verdict (comparisons meant for verdicts only)."""
    for layer, found in result.get("layers", {}).items():
        verdicts: dict[str, list[str]] = {}
        for student, c in found.get("comparisons", {}).items():
            if c.get("for_verdicts"):
                for hypothesis, h in c.get("hypotheses", {}).items():
                    verdicts.setdefault(hypothesis, []).append(f"{student} {h['verdict']}")
        for hypothesis, texts in verdicts.items():
            yield [f"{hypothesis.replace('_', ' ')} ({layer})", SEPARATOR.join(texts)]


def _property_rows(result: Mapping[str, Any]) -> Iterator[list[str]]:
    """Per finding of a property analysis' ``verdicts``: each student's verdict."""
    for finding, students in result.get("verdicts", {}).items():
        texts = [f"{s} {r['verdict']}" for s, r in students.items() if "verdict" in r]
        yield [finding, SEPARATOR.join(texts)]


def _claim_rows(result: Mapping[str, Any]) -> Iterator[list[str]]:
    """The three-levels claims and their verdicts."""
    for claim in result.get("claims", []):
        yield [claim["claim"], str(claim.get("verdict", "-"))]


def _count_rows(result: Mapping[str, Any]) -> Iterator[list[str]]:
    """The property-claims tally of the paper's findings."""
    counts = result.get("counts", {})
    if counts:
        yield ["the paper's findings", SEPARATOR.join(f"{k} {v}" for k, v in counts.items())]


def verdict_lines(analyses: Mapping[str, Any]) -> list[str]:
    """The analyses' headline verdicts, one aligned row per finding."""
    rows = []
    for name, result in analyses.items():
        if name == "knowledge_points":
            found = _knowledge_point_rows(result)
        elif name == "three_levels":
            found = _claim_rows(result)
        elif name == "property_claims":
            found = _count_rows(result)
        else:
            found = _property_rows(result)
        rows += [[name, clip(finding, FINDING_WIDTH), text] for finding, text in found]
    return ["verdicts:", *_aligned(rows)] if rows else []


def format_summary(summary: Mapping[str, Any], report: str) -> str:
    """The table of a study's ``summary.json``; past :data:`MAX_LINES` it ends with a pointer
    to ``report``."""
    lines = [
        f"results of {summary.get('study', 'the study')}:",
        *guard_lines(summary.get("guards", [])),
        *accuracy_lines(summary.get("analyses", {}).get("accuracy", {})),
        *verdict_lines(summary.get("analyses", {})),
    ]
    if len(lines) > MAX_LINES:
        lines = [*lines[: MAX_LINES - 1], f"... see {report}"]
    return "\n".join(clip(line, MAX_WIDTH) for line in lines)
