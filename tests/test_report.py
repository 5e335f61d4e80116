"""docs/REPRODUCTION.md against docs/results/: scripts/report_tables.py regenerates every marked table and
fails on any difference, on unknown or missing table ids and on unmarked tables. Pure pandas, no torch."""

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import report_tables as rt  # noqa: E402

REPORT = ROOT / "docs" / "REPRODUCTION.md"


@pytest.fixture
def copy(tmp_path):
    """A writable copy of the report; returns (path, text)."""
    path = tmp_path / "REPRODUCTION.md"
    text = REPORT.read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    return path, text


def edited(path, text, old, new):
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_committed_report_matches_its_results():
    assert rt.check(ROOT, REPORT) == []
    assert rt.main(["--check", "--report", str(REPORT)]) == 0


def test_a_changed_number_in_a_marked_table_fails_with_a_diff(copy, capsys):
    path = edited(*copy, "| SNLI | 200 | similarity | 30.5 | 54.5 | 30.5 +- 0.0 | 42.5 +- 1.0 |",
                  "| SNLI | 200 | similarity | 30.5 | 54.5 | 30.5 +- 0.0 | 42.6 +- 1.0 |")
    problems = rt.check(ROOT, path)
    assert len(problems) == 1 and problems[0].startswith("table:zoo differs")
    assert "-| SNLI | 200 | similarity | 30.5 | 54.5 | 30.5 +- 0.0 | 42.6" in problems[0]
    assert "+| SNLI | 200 | similarity | 30.5 | 54.5 | 30.5 +- 0.0 | 42.5" in problems[0]
    assert rt.main(["--check", "--report", str(path)]) == 1
    assert "table:zoo differs" in capsys.readouterr().err


def test_write_regenerates_the_marked_blocks(copy):
    path, text = copy
    edited(path, text, "| TREC | 30.2 -> 1.0 |", "| TREC | 30.2 -> 9.9 |")
    assert rt.main(["--write", "--report", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == text


def test_an_unmarked_table_fails(copy):
    path, text = copy
    extra = "\n## 8. More\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    path.write_text(text + extra, encoding="utf-8")
    problems = rt.check(ROOT, path)
    assert len(problems) == 1 and "table outside any <!-- table:ID --> block (under '## 8. More')" in problems[0]


def test_an_unknown_or_missing_table_id_fails(copy):
    path, text = copy
    edited(path, text, "<!-- table:negation -->", "<!-- table:negations -->")
    text2 = path.read_text(encoding="utf-8").replace("<!-- /table:negation -->", "<!-- /table:negations -->")
    path.write_text(text2, encoding="utf-8")
    problems = rt.check(ROOT, path)
    assert any("unknown table id 'negations'" in p for p in problems)
    assert any(p == "table:negation is registered but not in REPRODUCTION.md" for p in problems)
    assert rt.write(ROOT, path) and path.read_text(encoding="utf-8") == text2  # nothing written


def test_broken_markers_and_generators_are_problems(copy, monkeypatch):
    path, text = copy
    edited(path, text, "<!-- /table:geometry -->\n", "")
    assert any("table:geometry is never closed" in p or "opens inside" in p for p in rt.check(ROOT, path))
    monkeypatch.setitem(rt.TABLES, "probe-smollm2", lambda root: 1 / 0)
    assert any("table:probe-smollm2: generator failed: ZeroDivisionError" in p for p in rt.check(ROOT, REPORT))
    # --write still writes the other tables and leaves the failing one's block as it was
    path.write_text(text.replace("| TREC | 30.2 -> 1.0 |", "| TREC | 30.2 -> 9.9 |"), encoding="utf-8")
    problems = rt.write(ROOT, path)
    assert len(problems) == 1 and "table:probe-smollm2: generator failed, block left as it was" in problems[0]
    assert path.read_text(encoding="utf-8") == text


def test_tables_in_code_fences_are_not_tables(copy):
    path, text = copy
    path.write_text(text + "\n```text\n| a | b |\n|---|---|\n```\n", encoding="utf-8")
    assert rt.check(ROOT, path) == []


@pytest.mark.parametrize("args, expected", [
    ((0.46333, 0.0201), "46.3 +- 2.0"),
    ((0.86, 0.0685, 1, 2), "0.86 +- 0.07"),
    ((0.149, 0.0364, 1, 3), "0.149 +- 0.036"),
    ((0.5, 0.0), "50.0 +- 0.0"),
    ((-0.00001, 0.0, 1, 3), "0.000 +- 0.000"),  # never "-0.000"
    ((-0.068, 0.01, 1, 3), "-0.068 +- 0.010"),
    ((0.5, math.nan), "50.0"),  # one run: no std
    ((65.1, 1.4, 1), "65.1 +- 1.4"),  # already scaled
])
def test_pm(args, expected):
    assert rt.pm(*args) == expected


def test_num_and_md_table():
    assert rt.num(None) == rt.num(math.nan) == "-"
    assert rt.num(0.925) == "92.5" and rt.num(-0.0) == "0.0"
    assert rt.md_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    with pytest.raises(ValueError):
        rt.md_table(["a", "b"], [[1]])


@pytest.mark.parametrize("scores, expected", [
    ((55.8, 0.6, 55.5, 0.5, 3, 56.0, 62.0), "no"),  # RTE: within noise of the origin
    ((68.5, 0.0, 38.0, 1.0, 3, 68.5, 65.5), "not above the majority rate"),  # CoLA
    ((73.8, 0.8, 68.0, 0.0, 3, 68.0, 73.5), "yes"),  # MRPC: at the probe
    ((88.7, 0.6, 65.1, 1.4, 3, None, 75.5), "yes"),  # STS-B: no majority rate, above the probe
    ((78.2, 0.3, 37.5, 0.0, 3, 62.5, 87.5), "partly"),  # SciTail: more than 5 below the probe
])
def test_learned_rule(scores, expected):
    assert rt.learned(*scores) == expected


def test_registry_rejects_a_duplicate_id():
    with pytest.raises(ValueError):
        rt.table("zoo")(lambda root: "")


def test_similarity_readout_tasks_match_the_task_definitions():
    """The zoo table's readout column: the tasks whose spec carries similarity_targets (read as text)."""
    source = (ROOT / "tpv_core" / "tasks" / "builtin.py").read_text(encoding="utf-8")
    specs = [chunk.split('"', 1) for chunk in source.split('name="')[1:]]
    assert rt.SIMILARITY_READOUT == {task for task, rest in specs if "similarity_targets=" in rest}
