"""Shared pieces of the experiments: a resumable results log, intervals, prompt lookup."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from tpv_core import distributed
from tpv_core.prompts import SoftPrompt
from tpv_core.atomic import atomic_write_bytes, atomic_write_text
from tpv_core.store import PromptStore, StoreError
from tpv_core.readout import check_readout

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone
    from tpv_core.tasks import TaskSpec


@dataclass
class ExperimentResult:
    name: str
    runs: pd.DataFrame
    summary: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ResultsLog:
    """A CSV of finished runs, rewritten atomically after every new row, keyed by ``key`` columns.

    ``fill`` gives a value for a key column that an older log lacks, computed from the row (a column added
    to the key later, e.g. the few-shot data seed, which used to be the origin seed)."""

    def __init__(self, path: str | Path, key: Sequence[str],
                 fill: dict[str, Callable[[dict[str, Any]], Any]] | None = None):
        self.path, self.key = Path(path), tuple(key)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists() and self.path.stat().st_size:
            self.rows = pd.read_csv(self.path, keep_default_na=False, na_values=[""]).to_dict("records")
        for col, fn in (fill or {}).items():
            for r in self.rows:
                if col not in r or r[col] is None or (isinstance(r[col], float) and math.isnan(r[col])):
                    r[col] = fn(r)
        self._keys = {self._k(r) for r in self.rows}

    def _k(self, row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in self.key)

    def has(self, **key: Any) -> bool:
        return self._k(key) in self._keys

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._keys.add(self._k(row))
        if not distributed.is_main():  # under torchrun every rank holds the rows; rank 0 writes them
            return
        buf = io.StringIO()
        self.frame().to_csv(buf, index=False)
        atomic_write_text(self.path, buf.getvalue())

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def mean_ci(values: Iterable[float], level: float = 0.95) -> dict[str, float]:
    """Mean, sample std, n, and a t-distribution confidence interval of the mean."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def summarize(df: pd.DataFrame, by: Sequence[str], value: str, also_mean: Sequence[str] = ()) -> pd.DataFrame:
    """Per group of ``by``: :func:`mean_ci` of ``value``, plus ``<col>_mean`` for each column of ``also_mean``."""
    extra = [f"{c}_mean" for c in also_mean]
    if df.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "n", "ci_low", "ci_high", *extra])
    out = [{**dict(zip(by, keys if isinstance(keys, tuple) else (keys,))), **mean_ci(g[value]),
            **{f"{c}_mean": float(g[c].mean()) for c in also_mean}}
           for keys, g in df.groupby(list(by), sort=False)]
    return pd.DataFrame(out)


def choose_length(store: PromptStore, backbone: "Backbone", specs: Sequence["TaskSpec"],
                  length: int | None = None, seeds: Sequence[int] | None = None) -> int | None:
    """The prompt length L an experiment reads (an origin is a seed *and* a length, and prompts of different
    lengths do not add up): ``length`` when given; else the one length the tasks' stored prompts have; where
    the store holds several (the demo prompts beside paper-recipe ones), the backbone family's default L
    when stored, else the shortest, with a warning that names them and ``--length``. None: nothing stored."""
    if length is not None:
        return int(length)
    names = [t.name for t in specs]
    df = store.index(backbone=backbone.name)  # one pass over the store's headers for every task
    df = df[df["task"].isin(names)]
    if seeds is not None:
        df = df[df["seed"].isin(list(seeds))]
    return _pick_length(df, backbone, names)


def _pick_length(df: pd.DataFrame, backbone: "Backbone", names: Sequence[str]) -> int | None:
    """`choose_length`'s rule on index rows ``df`` of the tasks ``names``."""
    from tpv_core.training import default_length

    return pick_length(df["length"], default_length(backbone),
                       f"the stored prompts of {', '.join(names)} on {backbone.name}", stacklevel=4)


def pick_length(lengths: Iterable, default: int | None, what: str, *, stacklevel: int = 2) -> int | None:
    """One prompt length out of ``lengths`` (index rows' ``length``): the only one; or, where there are several,
    ``default`` (the family's L) when present, else the shortest, with a warning that names them and
    ``--length``. None when ``lengths`` is empty."""
    found = sorted({int(x) for x in lengths})
    if len(found) <= 1:
        return next(iter(found), None)
    pick = default if default in found else found[0]
    warnings.warn(f"{what} come in lengths L = {', '.join(map(str, found))}; reading the L = {pick} ones "
                  "(--length chooses)", stacklevel=stacklevel)
    return pick


def stored_prompts(store: PromptStore, backbone: "Backbone", task: "TaskSpec",
                   seeds: Sequence[int] | None, length: int | None = None) -> dict[int, SoftPrompt]:
    """The stored prompts of one task by origin seed (first origin kind found per seed; only prompts of
    ``length`` soft tokens when given, else `choose_length`'s), each checked to have been tuned under the
    readout ``backbone`` uses for ``task`` (`check_readout`)."""
    df = store.index(backbone=backbone.name, task=task.name)
    if seeds is not None:
        df = df[df["seed"].isin(list(seeds))]
    if length is None:
        length = _pick_length(df, backbone, [task.name])
    if length is not None:
        df = df[df["length"] == length]
    out: dict[int, SoftPrompt] = {}
    for seed, path in zip(df["seed"], df["path"]):
        if int(seed) not in out:
            try:
                prompt = store.load(backbone.name, task.name, Path(path).stem)
            except StoreError as exc:  # a damaged file: left out with a note, the other origins go on
                warnings.warn(f"skipped: {exc}", stacklevel=2)
                continue
            out[int(seed)] = check_readout(prompt, backbone, task)
    return out


def task_prompts(store: PromptStore, backbone: "Backbone", specs: Sequence["TaskSpec"], seeds: Sequence[int] | None,
                 what: str, length: int | None = None) -> dict[str, dict[int, SoftPrompt]]:
    """The stored prompts of several tasks (task name -> origin seed -> prompt), all of one length
    (`choose_length`); a clear error for a task without any (``what`` names the experiment in it)."""
    length = choose_length(store, backbone, specs, length, seeds)
    prompts = {t.name: stored_prompts(store, backbone, t, seeds, length) for t in specs}
    for t in specs:
        require(prompts[t.name], f"{what} {t.name}" + (f" (L = {length})" if length is not None else ""),
                store, backbone.name)
    return prompts


def require(prompts: dict[int, SoftPrompt], what: str, store: PromptStore, backbone: str, need: int = 1) -> None:
    if len(prompts) < need:
        raise FileNotFoundError(
            f"{what}: need stored prompts for at least {need} origin(s) on {backbone} in {store.root}, found "
            f"{len(prompts)}; train them with `tpv train --backbone {backbone} --task ... --origin 0 1 2`"
        )


def write_outputs(out_dir: Path, name: str, summary: pd.DataFrame, figures: dict[str, Any]) -> list[Path]:
    """Write the summary CSV and each figure as HTML (always) and PNG (when Chromium is available); under
    torchrun on rank 0 only (the other ranks return no files)."""
    if not distributed.is_main():
        return []
    files = [atomic_write_text(out_dir / f"{name}_summary.csv", summary.to_csv(index=False))]
    from tpv_core import plots

    for fig_name, fig in figures.items():
        files.append(atomic_write_text(out_dir / f"{fig_name}.html", plots.export_figure(fig, "html").decode()))
        try:
            png = plots.export_figure(fig, "png")
        except plots.ExportUnavailableError:
            continue
        files.append(atomic_write_bytes(out_dir / f"{fig_name}.png", png))
    return files


ProgressFn = Callable[[str], None]
