"""The report reads at a glance: the verdicts in plain sentences first, a table of contents,
the configuration folded away, training curves with a band over seeds and a caption."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from kdscope.report import CURVES_CAPTION, glance_sentences


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("glance") / "run"
    cmd = [sys.executable, "-m", "kdscope.cli", "run", "--preset", "smoke", "--out", str(out)]
    proc = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    return (out / "report.html").read_text(), summary


def _section(page: str, sid: str) -> str:
    """The HTML of the section with id ``sid``."""
    match = re.search(rf"<section id='{sid}'>(.*?)</section>", page, re.S)
    assert match, sid
    return match.group(1)


def test_glance_comes_first_with_a_sentence_per_student(
    smoke_report: tuple[str, dict[str, Any]],
) -> None:
    page, summary = smoke_report
    first = re.search(r"<section id='([^']+)'>", page)
    assert first and first.group(1).startswith("at-a-glance")
    assert page.index("id='read-this-first'") < first.start()
    glance = _section(page, first.group(1))
    students = [n for n, m in summary["models"].items() if m["role"] == "student"]
    assert re.findall(r"data-student='([^']+)'", glance) == students
    for name in students:
        item = re.search(rf"data-student='{name}'><ul>(.*?)</ul>", glance, re.S)
        assert item and item.group(1).count("<li>") >= 1
        assert f"<li>{name}: test accuracy: " in item.group(1)


def test_toc_links_resolve_to_ids(smoke_report: tuple[str, dict[str, Any]]) -> None:
    page, _ = smoke_report
    toc = re.search(r"<nav class='toc' id='contents'>(.*?)</nav>", page, re.S)
    assert toc
    links = re.findall(r"href='#([^']+)'", toc.group(1))
    ids = re.findall(r"\bid='([^']+)'", page)
    assert len(ids) == len(set(ids))
    assert links and set(links) <= set(ids)
    sections = re.findall(r"<section id='([^']+)'>", page)
    assert set(sections) <= set(links)


def test_config_is_folded_away(smoke_report: tuple[str, dict[str, Any]]) -> None:
    page, _ = smoke_report
    config = _section(page, "configuration")
    assert re.search(r"<details><summary>.*?</summary><pre>name: smoke", config, re.S)


def test_curves_figure_has_its_caption(smoke_report: tuple[str, dict[str, Any]]) -> None:
    page, _ = smoke_report
    curves = _section(page, "training-curves")
    assert re.search(r"<figure><img [^>]*src=\"data:image/png;base64,[^\"]+\"/>", curves)
    assert f"<figcaption>{CURVES_CAPTION}</figcaption>" in curves


def _interval(mean: float, lo: float, hi: float) -> dict[str, Any]:
    return {"mean": mean, "ci95": [lo, hi], "n_seeds": 3}


def test_sentences_follow_the_verdicts() -> None:
    summary = {
        "models": {
            "baseline": {"role": "baseline", "baseline": None},
            "kd": {"role": "student", "baseline": "baseline"},
            "crd": {"role": "student", "baseline": "baseline"},
        },
        "guards": [
            {
                "guard": "premise unmet",
                "severity": "warning",
                "message": "crd is not more accurate than its independent student",
                "fix": "tune",
            }
        ],
        "analyses": {
            "accuracy": {
                "student_minus_baseline": {
                    "kd": {**_interval(0.02, 0.01, 0.03), "verdict": "better"},
                    "crd": {**_interval(-0.01, -0.05, 0.03), "verdict": "inconclusive"},
                }
            },
            "knowledge_points": {
                "layers": {
                    "conv": {
                        "comparisons": {
                            "kd": {
                                "baseline": "baseline",
                                "for_verdicts": True,
                                "hypotheses": {"learning_speed": {"verdict": "does not hold"}},
                            },
                            "crd": {"for_verdicts": False, "hypotheses": {}},
                        }
                    }
                }
            },
            "representation_similarity": {
                "verdicts": {
                    "matched CKA": {
                        "kd": {
                            "verdict": "transfers",
                            "gap": _interval(0.047, 0.014, 0.080),
                            "controls": {"soft_label": _interval(0.05, 0.01, 0.1)},
                            "premise": "met",
                        },
                        "crd": {"verdict": "inconclusive", "gap": None, "premise": "unmet"},
                    }
                }
            },
        },
    }
    said = glance_sentences(summary)
    assert list(said) == ["kd", "crd"]
    assert said["kd"] == [
        "kd: test accuracy: more accurate than baseline (+0.020 [+0.010, +0.030]).",
        "kd: knowledge points: at conv, learns from a longer weight path than baseline "
        "(hypothesis 2 does not hold).",
        "kd: matched CKA: moves toward the teacher's, beyond the soft_label control "
        "(+0.047 [+0.014, +0.080]).",
    ]
    assert said["crd"] == [
        "crd: test accuracy: no clear difference from baseline (inconclusive) (-0.010 [-0.050, +0.030]).",
        "crd: matched CKA: inconclusive (no estimate) (premise unmet: not scored).",
        "crd: limited by the guard(s) premise unmet (see above).",
    ]
