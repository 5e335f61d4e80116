"""Shared machinery of scripts/report_tables.py: the table registry, formatting helpers, loaders of
docs/results/, and the marker-block check / rewrite of docs/REPRODUCTION.md.

Standard library + pandas + numpy only (no torch): the check runs in the tests in well under a second.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

RESULTS = Path("docs") / "results"
REPORT = Path("docs") / "REPRODUCTION.md"

# The paper's published numbers (Belanec et al., "Task Prompt Vectors"), T5-base, as the report quotes them.
PAPER = {
    # Table 1 (cross-origin transfer): accuracy x100, original / mixed origin.
    "cross_origin": {"mnli": (85.4, 85.3), "qnli": (93.3, 93.2), "sst2": (93.8, 93.2),
                     "dbpedia_14": (99.1, 99.0), "yelp_polarity": (97.2, 97.1), "trec": (95.5, 26.5)},
    # Fig. 2 (addition): relative score of each task of a pair, in our pair order (the paper lists
    # DBpedia + Yelp as 0.01 / 0.98).
    "addition": {("sst2", "yelp_polarity"): (0.97, 0.99), ("yelp_polarity", "dbpedia_14"): (0.98, 0.01)},
    # Fig. 3 (few-shot initialisation): F1 x100, random / best single source / TPV, by (target, k).
    "fewshot": {("scitail", 0): (54.9, 70.4, 71.5), ("scitail", 100): (75.6, 87.8, 88.1),
                ("ag_news", 0): (0, 0, 0), ("ag_news", 100): (50.4, 83.4, 83.0),
                ("imdb", 0): (77.2, 90.0, 90.1), ("imdb", 100): (89.4, 90.3, 90.4)},
    # The paper's similarity analysis: flat cosine of one task's vectors from different origins, all
    # tasks (the range section 4 of the report quotes; the figure number is not recorded there).
    "same_task_flat": "0.06-0.10",
}

#: table id -> generator(root) returning the markdown table (header, separator, data rows).
TABLES: dict[str, Callable[[Path], str]] = {}

OPEN = re.compile(r"^<!-- table:([A-Za-z0-9_.-]+) -->$")
CLOSE = re.compile(r"^<!-- /table:([A-Za-z0-9_.-]+) -->$")
SEPARATOR = re.compile(r"^\|\s*:?-{3,}")

TASK_NAMES = {
    "mnli": "MNLI", "qnli": "QNLI", "snli": "SNLI", "scitail": "SciTail", "rte": "RTE", "cb": "CB",
    "qqp": "QQP", "mrpc": "MRPC", "stsb": "STS-B", "cola": "CoLA", "sst2": "SST-2", "sst5": "SST-5",
    "trec": "TREC", "dbpedia_14": "DBpedia", "ag_news": "AG News", "yahoo_answers_topics": "Yahoo Answers",
    "imdb": "IMDB", "yelp_polarity": "Yelp", "sentences_yelp": "UCI Yelp sentences",
    "sentences_imdb": "UCI IMDB sentences", "sentences_amazon": "UCI Amazon sentences",
}


def table(table_id: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    """Register a generator under ``table_id`` (the id of its ``<!-- table:ID -->`` block)."""
    def register(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        if table_id in TABLES:
            raise ValueError(f"table id registered twice: {table_id}")
        TABLES[table_id] = fn
        return fn
    return register


# ------------------------------------------------------------------------------------ formatting
def num(x: float, scale: float = 100, digits: int = 1) -> str:
    """``x * scale`` with ``digits`` decimals; NaN / None -> "-"; never "-0.0"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    text = f"{float(x) * scale:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def pm(mean: float, std: float, scale: float = 100, digits: int = 1) -> str:
    """``"46.3 +- 2.0"``: mean +- sample std, both scaled; a NaN std (one run) leaves the mean alone."""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return num(mean, scale, digits)
    return f"{num(mean, scale, digits)} +- {num(std, scale, digits)}"


def md_table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """A markdown table: header row, ``|---|`` separator, one line per row."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row has {len(cells)} cells, header {len(header)}: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def name(task: str) -> str:
    return TASK_NAMES.get(task, task)


# ------------------------------------------------------------------------------------ loaders
def read_csv(root: Path, rel: str) -> pd.DataFrame:
    return pd.read_csv(Path(root) / RESULTS / rel)


def read_results(root: Path, *rels: str, key: str = "results") -> pd.DataFrame:
    """The ``key`` lists of one or more ``--json`` outputs, concatenated: ``results`` of tpv eval / tpv probe,
    ``prompts`` of tpv store list."""
    frames = []
    for rel in rels:
        with open(Path(root) / RESULTS / rel, encoding="utf-8") as fh:
            frames.append(pd.DataFrame(json.load(fh)[key]))
    return pd.concat(frames, ignore_index=True)


def one(values: Iterable[object], what: str) -> object:
    """The single distinct value of ``values`` (e.g. the row count of one task's runs), else an error."""
    distinct = sorted(set(values), key=str)
    if len(distinct) != 1:
        raise ValueError(f"{what}: expected one value, found {distinct}")
    return distinct[0]


# ------------------------------------------------------------------------------------ report blocks
def parse(lines: list[str]) -> tuple[list[tuple[str, int, int]], list[str]]:
    """Marker blocks as (id, open line index, close line index), and structural problems."""
    blocks, problems, current = [], [], None
    for i, line in enumerate(lines):
        opened, closed = OPEN.match(line), CLOSE.match(line)
        if opened:
            if current:
                problems.append(f"line {i + 1}: table:{opened[1]} opens inside table:{current[0]}")
            current = (opened[1], i)
        elif closed:
            if not current or current[0] != closed[1]:
                problems.append(f"line {i + 1}: /table:{closed[1]} closes no open table:{closed[1]}")
            else:
                blocks.append((current[0], current[1], i))
            current = None
    if current:
        problems.append(f"line {current[1] + 1}: table:{current[0]} is never closed")
    seen = [b[0] for b in blocks]
    problems += [f"table:{t} is marked {seen.count(t)} times" for t in sorted(set(seen)) if seen.count(t) > 1]
    return blocks, problems


def unmarked_tables(lines: list[str], blocks: list[tuple[str, int, int]]) -> list[str]:
    """Markdown tables outside every marker block (and outside code fences): each one is a problem."""
    inside = {i for _, start, end in blocks for i in range(start, end + 1)}
    heading, fenced, found = "", False, {}
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            heading = line.strip()
        elif (not fenced and i not in inside and line.startswith("|") and i + 1 < len(lines)
              and SEPARATOR.match(lines[i + 1])):
            found.setdefault(heading, []).append(i + 1)
    problems = []
    for heading, starts in found.items():
        problems += [f"line {s}: table outside any <!-- table:ID --> block (under '{heading}')"
                     for s in starts]
    return problems


def _generate(root: Path, table_id: str) -> str:
    return TABLES[table_id](root).strip("\n")


def check(root: Path, report: Path | None = None) -> list[str]:
    """Every problem of the report against docs/results/: [] when all marked tables match."""
    root = Path(root)
    report = Path(report) if report else root / REPORT
    lines = report.read_text(encoding="utf-8").split("\n")
    blocks, problems = parse(lines)
    problems += unmarked_tables(lines, blocks)
    marked = {b[0] for b in blocks}
    problems += [f"table:{t} is registered but not in {report.name}" for t in TABLES if t not in marked]
    for table_id, start, end in blocks:
        if table_id not in TABLES:
            problems.append(f"line {start + 1}: unknown table id '{table_id}' (not in TABLES)")
            continue
        try:
            new = _generate(root, table_id)
        except Exception as exc:  # a broken generator is a problem of the report, not a crash
            problems.append(f"table:{table_id}: generator failed: {type(exc).__name__}: {exc}")
            continue
        old = "\n".join(lines[start + 1:end]).strip("\n")
        if old != new:
            diff = difflib.unified_diff(old.split("\n"), new.split("\n"), f"{report.name} (table:{table_id})",
                                        f"generated (table:{table_id})", lineterm="")
            problems.append(f"table:{table_id} differs from docs/results/:\n" + "\n".join(diff))
    return problems


def write(root: Path, report: Path | None = None) -> list[str]:
    """Rewrite every marked block from its generator (atomically); a block whose generator fails is left as
it was and named in the returned problems (the others are written)."""
    root = Path(root)
    report = Path(report) if report else root / REPORT
    lines = report.read_text(encoding="utf-8").split("\n")
    blocks, problems = parse(lines)
    problems += [f"unknown table id '{b[0]}'" for b in blocks if b[0] not in TABLES]
    if problems:
        return problems
    for table_id, start, end in sorted(blocks, key=lambda b: b[1], reverse=True):
        try:
            lines[start + 1:end] = _generate(root, table_id).split("\n")
        except Exception as exc:  # noqa: BLE001 - the other tables are still written
            problems.append(f"table:{table_id}: generator failed, block left as it was: {type(exc).__name__}: {exc}")
    fd, tmp = tempfile.mkstemp(dir=report.parent, prefix=f".{report.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, report.stat().st_mode & 0o777)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write("\n".join(lines))
        os.replace(tmp, report)
    except BaseException:
        os.unlink(tmp)
        raise
    return problems
