"""Combinations of task prompt vectors: build one, describe it, save it; the one schema for ``tpv combine``
and the app's Combine page.

A saved combination is a stored prompt whose metadata has ``source == "combination"`` (that, not its
name, marks it: the store index has a ``source`` column) and a ``combination`` entry::

    {"method": "sum", "origin": "<origin id>", "lambda": 1.0, "label": "...",
     "vectors": [{"task": "sst2", "origin": "<origin id>", "weight": 0.5}, ...],
     "terms": [["sst2", 0.5], ...],
     "scores": {"validation": {"sst2": 0.81, ...}, "test": {...}}}

plus flat metrics ``val_<task>`` / ``test_<task>`` for the index. :func:`read_combination` also reads
the two older layouts (the page's ``vectors`` without ``lambda``; the CLI's ``terms`` + ``lambda`` with
``validation_<task>`` metrics), so combinations already in a store still load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from tpv_core.combine import MERGE_METHODS, merge
from tpv_core.finite import require_finite_number
from tpv_core.prompts import Origin, SoftPrompt, TaskPromptVector
from tpv_core.store import PromptStore

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone

SOURCE = "combination"
SPLIT_PREFIX = {"validation": "val", "test": "test", "train": "train"}


def is_combination(meta_or_row: Mapping[str, Any]) -> bool:
    """True for a stored combination: metadata (or an index row) with ``source == "combination"``."""
    return meta_or_row.get("source") == SOURCE


@dataclass(frozen=True)
class VectorTerm:
    """One weighted vector of a combination: the stored prompt's task and origin, and its weight."""

    task: str
    origin: str
    weight: float

    @property
    def seed_tag(self) -> str:
        m = re.search(r"-s(\d+)", self.origin)
        return f"s{m.group(1)}" if m else self.origin


@dataclass
class Combination:
    """A combined prompt and everything needed to describe and save it."""

    tensor: torch.Tensor
    origin: Origin
    method: str
    terms: list[VectorTerm]
    coef: float = 1.0
    tau: TaskPromptVector | None = None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> task -> main score

    @property
    def label(self) -> str:
        """A plain-text formula, e.g. ``P0(vocab5000-s0-L20) + 0.55·sst2[s0] − 0.2·yelp_polarity[s1]``: each
        term with its origin, signs written out (safe to show in code formatting)."""
        return formula(self.terms, self.origin.id, self.method, self.coef)

    def default_name(self) -> str:
        return default_name(self.terms, self.method)

    def metadata(self, backbone: "Backbone | None" = None) -> dict[str, Any]:
        metrics = {f"{SPLIT_PREFIX.get(split, split)}_{task}": score
                   for split, by_task in self.scores.items() for task, score in by_task.items()}
        return {
            "source": SOURCE,
            "combination": {
                "method": self.method,
                "origin": self.origin.id,
                "lambda": self.coef,
                "label": self.label,
                "vectors": [{"task": t.task, "origin": t.origin, "weight": t.weight} for t in self.terms],
                "terms": [[t.task, t.weight] for t in self.terms],
                "scores": {s: dict(v) for s, v in self.scores.items()},
            },
            "metrics": metrics,
            "backbone_model_id": getattr(backbone, "model_id", None),
            "backbone_family": getattr(backbone, "family", None),
            "steps": 0,
        }

    def as_prompt(self, name: str, backbone: "Backbone") -> SoftPrompt:
        return SoftPrompt(self.tensor.detach().float().cpu(), self.origin, name, backbone.name,
                          self.metadata(backbone))


def _fmt(w: float) -> str:
    return f"{w:g}"


def formula(terms: Sequence[VectorTerm], origin_id: str, method: str = "sum", coef: float = 1.0) -> str:
    parts = []
    for i, t in enumerate(terms):
        sign = "−" if t.weight < 0 else ("+" if i else "")
        body = f"{_fmt(abs(t.weight))}·{t.task}[{t.seed_tag}]"
        parts.append(f"{sign} {body}" if i or sign else body)
    inner = " ".join(parts) if parts else "0"
    inner = inner if method == "sum" else f"{method}({inner})"
    if coef != 1.0:
        inner = f"{_fmt(coef)}·({inner})"
    joiner = " " if inner.startswith("−") else " + "
    return f"P0({origin_id}){joiner}{inner}"


def default_name(terms: Sequence[VectorTerm], method: str = "sum") -> str:
    """A store-safe task name for a combination, one part per term: ``sum_0.55sst2.s0_1.1yelp_polarity.s0``
    (negative weights as ``m0.2``); two vectors of one task from different origins stay two parts."""
    parts = [f"{'m' if t.weight < 0 else ''}{_fmt(abs(t.weight))}{t.task}.{t.seed_tag}" for t in terms]
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", f"{method}_" + "_".join(parts))


def combine_prompts(prompts: Sequence[SoftPrompt], weights: Sequence[float], origin: Origin, *,
                    method: str = "sum", coef: float = 1.0) -> Combination:
    """``origin + coef * merge(weights_i * tau_i)`` over the prompts' task prompt vectors (the merge checks the
    weights: one per vector, finite)."""
    if method not in MERGE_METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(MERGE_METHODS)}")
    if not prompts:
        raise ValueError("a combination needs at least one vector")
    coef = require_finite_number(coef, "lambda")
    tau = merge(method, [p.vector() for p in prompts], weights)
    terms = [VectorTerm(p.task, p.origin.id, float(w)) for p, w in zip(prompts, weights, strict=True)]
    return Combination(tau.apply_to(origin, coef), origin, method, terms, coef, tau)


def save_combination(store: PromptStore, combination: Combination, name: str, backbone: "Backbone", *,
                     overwrite: bool = False) -> str:
    """Store a combination under task ``name`` (its origin's file); refuses to replace an existing file
    unless ``overwrite`` (`PromptExistsError`, also when another session saved the name a moment before)."""
    if not name or not name.strip():
        raise ValueError("a combination needs a name to be stored under")
    prompt = combination.as_prompt(name.strip(), backbone)
    # the existence check and the write happen under the target's lock: of two sessions saving one name at
    # once, one saves and the other gets PromptExistsError (a FileExistsError)
    return str(store.save(prompt, overwrite=overwrite))


def read_combination(prompt: SoftPrompt) -> dict[str, Any] | None:
    """The combination entry of a stored prompt in the current layout (None when the prompt is not a
    combination); older layouts are converted."""
    meta = prompt.metadata
    if not is_combination(meta):
        return None
    c = dict(meta.get("combination") or {})
    origin = c.get("origin") or prompt.origin.id
    vectors = c.get("vectors") or [{"task": t, "origin": origin, "weight": w} for t, w in c.get("terms") or []]
    scores: dict[str, dict[str, float]] = {k: dict(v) for k, v in (c.get("scores") or {}).items()}
    if not scores:
        for key, value in (meta.get("metrics") or {}).items():
            split, _, task = key.partition("_")
            split = {"val": "validation"}.get(split, split)
            if task and isinstance(value, (int, float)):
                scores.setdefault(split, {})[task] = value
    return {"method": c.get("method", "sum"), "origin": origin, "lambda": float(c.get("lambda", 1.0)),
            "label": c.get("label"), "vectors": vectors,
            "terms": [[v["task"], v["weight"]] for v in vectors], "scores": scores}


def resolve_vectors(store: PromptStore, backbone: "Backbone", refs: Sequence[str], default_seed: int,
                    root: str | None = None, length: int | None = None) -> list[SoftPrompt]:
    """Stored prompts named ``TASK[:SEED]`` (seed default ``default_seed``), all of one prompt length
    (``length``, else `choose_length`'s over the named tasks), each checked against the backbone's readout;
    a clear error for one the store does not hold."""
    from tpv_core.experiments.common import choose_length, stored_prompts
    from tpv_core.tasks import get_task

    tasks = [get_task(str(ref).partition(":")[0], root or str(store.root)) for ref in refs]
    length = choose_length(store, backbone, tasks, length)
    out = []
    for ref, task in zip(refs, tasks):
        seed = str(ref).partition(":")[2]
        try:
            seed_i = int(seed) if seed else int(default_seed)
        except ValueError:
            raise ValueError(f"bad vector {ref!r}: the origin seed after ':' must be an integer") from None
        found = stored_prompts(store, backbone, task, [seed_i], length)
        if seed_i not in found:
            raise FileNotFoundError(f"no stored {task.name} prompt from origin seed {seed_i}"
                                    + (f" with L = {length}" if length is not None else "")
                                    + f" for {backbone.name} in {store.root}")
        out.append(found[seed_i])
    return out
