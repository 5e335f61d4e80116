"""`TaskSpec`: everything the workbench needs to know about one task.

A spec is plain, frozen data: fields, labels, verbalisers, label descriptions, metrics, where the
data lives (bundled folder, hub id, or a user's custom folder) and the text templates.

Input text per backbone family (`TaskSpec.format(example, family)`):

* ``"seq2seq"`` (T5, the paper's style): ``"<task> <field>: <value> <field>: <value>"``, e.g.
  ``"mnli premise: ... hypothesis: ..."``.
* ``"decoder"`` (instruction-tuned causal LMs): the task instruction, one ``Title: value`` line per
  field, then ``Answer:``; the backbone appends the verbaliser (``" entailment"``).
* ``"encoder"`` (sentence encoders scored against label descriptions): the raw field values
  joined with ``sep`` (default ``" | "``; for tasks with ``similarity_targets`` the encoder backbone
  passes its tokenizer's separator, ``" [SEP] "``, and reads the two fields apart).
  `TaskSpec.text_values` gives the values alone, for tokenizer pair encoding.

Missing or ``None`` field values become ``""``.

STS-B (the only regression task) is represented as classification over a 0.2 grid on 0..5
(26 labels ``"0.0" ... "5.0"``): `label_of` rounds a score half-up to the nearest grid point, the
verbalisers are the grid strings, and metrics compare the grid value of the predicted class
against the true float scores (see `tpv_core.tasks.metrics`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

TASK_FAMILIES = ("nli", "classification", "sentiment", "paraphrase", "acceptability", "similarity")
BACKBONE_FAMILIES = ("seq2seq", "decoder", "encoder")
SPLITS = ("train", "validation", "test")
METRICS = ("accuracy", "f1", "macro_f1", "pearson", "spearman")

#: STS-B grid: 0.0, 0.2, ..., 5.0 (26 points).
GRID_STEP = 0.2
GRID_MAX = 5.0
GRID = tuple(round(i * GRID_STEP, 1) for i in range(int(round(GRID_MAX / GRID_STEP)) + 1))


def grid_index(score: float) -> int:
    """Nearest grid index for a similarity score (half-up, clamped to 0..5)."""
    s = min(max(float(score), 0.0), GRID_MAX)
    return int(math.floor(s / GRID_STEP + 0.5 + 1e-9))


def grid_value(index: int) -> float:
    """Score of a grid class index."""
    return GRID[index]


def task_key(name: str) -> str:
    """Lookup key of a task name: lower-case, without spaces, '-', '_' and '/' ("SST-2" == "sst2")."""
    return re.sub(r"[\s_\-/]", "", str(name).lower())


@dataclass(frozen=True)
class LabelSet:
    """A task's classes as a backbone sees them.

    ``words``: verbalisers scored by the generative families (decoder / seq2seq), e.g. ("positive", "negative").
    ``descriptions``: label description texts embedded by the encoder family, e.g. ("This review is positive.", ...).
    ``targets``: for two-field tasks, the cosine between the two fields that each class stands for (e.g.
    entailment 1.0, neutral 0.5, contradiction 0.0); when given, the encoder family reads the class from
    that cosine instead of from the descriptions (`TaskSpec.similarity_targets`). Empty otherwise.
    """

    words: tuple[str, ...]
    descriptions: tuple[str, ...]
    targets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", tuple(self.words))
        object.__setattr__(self, "descriptions", tuple(self.descriptions))
        object.__setattr__(self, "targets", tuple(float(t) for t in self.targets))
        if not self.words:
            raise ValueError("LabelSet needs at least one label")
        if len(self.words) != len(self.descriptions):
            raise ValueError(
                f"LabelSet has {len(self.words)} words but {len(self.descriptions)} descriptions; "
                "give one verbaliser and one description per class"
            )
        bad = [w for w in (*self.words, *self.descriptions) if not isinstance(w, str) or not w.strip()]
        if bad:
            raise ValueError(f"LabelSet words and descriptions must be non-empty strings, got {bad!r}")
        if self.targets and len(self.targets) != len(self.words):
            raise ValueError(f"LabelSet has {len(self.words)} labels but {len(self.targets)} similarity targets")

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class Templates:
    """Text templates of a task.

    instruction: decoder-family instruction; ``{choices}`` is replaced by the verbalisers
        ("a, b or c").
    field_titles: one display title per text field for the decoder template (default: derived
        from the field names, ``sentence1`` -> ``Sentence 1``).
    seq2seq_prefix: prefix of the T5-style input (default: the task name).
    """

    instruction: str = "Classify the text. Answer {choices}."
    field_titles: tuple[str, ...] = ()
    seq2seq_prefix: str = ""


def _default_title(field_name: str) -> str:
    t = re.sub(r"(?<=[a-z])(\d+)$", r" \1", field_name).replace("_", " ").strip()
    return t[:1].upper() + t[1:]


def _choices(words: tuple[str, ...]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _text(v: Any) -> str:
    return "" if v is None else str(v)


@dataclass(frozen=True)
class TaskSpec:
    """One task: data, labels, verbalisers, metrics, templates.

    ``family`` is the *task* family (nli, sentiment, ...); the backbone family is an argument of
    `format`. Label index ``i`` has name ``label_names[i]``, verbaliser ``words[i]`` and encoder
    description ``descriptions[i]``.
    """

    name: str
    title: str
    family: str
    text_fields: tuple[str, ...]
    label_field: str
    label_names: tuple[str, ...]
    words: tuple[str, ...]
    descriptions: tuple[str, ...]
    metrics: tuple[str, ...]
    templates: Templates = field(default_factory=Templates)
    hub_id: str | None = None
    hub_config: str | None = None
    hub_train_split: str = "train"
    #: hub split used as the evaluation source; None = "validation" if present, else "test".
    hub_eval_split: str | None = None
    #: label column name on the hub when it differs from ``label_field`` (yahoo: "topic").
    hub_label_field: str | None = None
    #: string hub labels -> index (SciTail tsv_format: "entails"/"neutral").
    hub_label_map: tuple[tuple[str, int], ...] = ()
    bundled: str | None = None
    regression: bool = False
    paper: bool = True
    caveats: tuple[str, ...] = ()
    citation: str = ""
    #: custom tasks: folder holding train/validation/test.jsonl (set when read from a store).
    data_dir: str | None = None
    #: custom tasks not yet registered: the user's file or folder (split on the fly).
    source_path: str | None = None
    custom: bool = False
    #: two-field tasks: the cosine between the fields that each class stands for (entailment 1.0 ...);
    #: the encoder family then reads classes from that cosine (`tpv_core.backbones.encoder`). Empty: no.
    similarity_targets: tuple[float, ...] = ()
    #: where `load_split(..., source="auto")` reads this task from: "auto" | "bundled" | "hub"; and a folder
    #: of full local task copies (``--data-dir``). Bound per run by `tpv_core.tasks.sources.with_source`.
    data_source: str = "auto"
    local_copy: str | None = None

    def __post_init__(self) -> None:
        n = len(self.label_names)
        if self.family not in TASK_FAMILIES:
            raise ValueError(f"task {self.name!r}: family {self.family!r} not in {TASK_FAMILIES}")
        if not self.text_fields:
            raise ValueError(f"task {self.name!r}: no text fields")
        if len(self.words) != n or len(self.descriptions) != n:
            raise ValueError(
                f"task {self.name!r}: {n} labels but {len(self.words)} words and "
                f"{len(self.descriptions)} descriptions"
            )
        if len(set(self.words)) != n:
            raise ValueError(f"task {self.name!r}: verbalisers are not distinct: {self.words}")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise ValueError(f"task {self.name!r}: unknown metrics {bad}; known: {METRICS}")
        if self.similarity_targets:
            if len(self.text_fields) != 2:
                raise ValueError(f"task {self.name!r}: similarity targets need two text fields, "
                                 f"not {len(self.text_fields)}")
            if len(self.similarity_targets) != n:
                raise ValueError(f"task {self.name!r}: {n} labels but {len(self.similarity_targets)} similarity targets")
            if any(not -1.0 <= float(t) <= 1.0 for t in self.similarity_targets):
                raise ValueError(f"task {self.name!r}: similarity targets are cosines in [-1, 1], "
                                 f"got {self.similarity_targets}")

    # ---- labels -------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def label_set(self) -> LabelSet:
        return LabelSet(words=tuple(self.words), descriptions=tuple(self.descriptions),
                        targets=tuple(self.similarity_targets))

    def raw_label(self, example: Mapping[str, Any]) -> Any:
        """The label value as stored in a row (``"label"`` first, then ``label_field``)."""
        if "label" in example:
            return example["label"]
        if self.label_field in example:
            return example[self.label_field]
        raise KeyError(f"task {self.name!r}: row has no 'label' or {self.label_field!r} field")

    def label_of(self, example: Mapping[str, Any]) -> int:
        """Integer class of a row; for regression the index of the nearest grid point."""
        v = self.raw_label(example)
        if self.regression:
            return grid_index(float(v))
        if isinstance(v, str):
            if v in self.label_names:
                return self.label_names.index(v)
            v = int(v)
        i = int(v)
        if not 0 <= i < self.num_labels:
            raise ValueError(f"task {self.name!r}: label {v!r} out of range 0..{self.num_labels - 1}")
        return i

    def label_value(self, index: int) -> float | int:
        """Inverse of `label_of`: grid score for regression, the index itself otherwise."""
        return grid_value(index) if self.regression else int(index)

    # ---- text ---------------------------------------------------------------------------
    def text_values(self, example: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(_text(example.get(f)) for f in self.text_fields)

    def field_titles(self) -> tuple[str, ...]:
        t = self.templates.field_titles
        if len(t) == len(self.text_fields):
            return tuple(t)
        return tuple(_default_title(f) for f in self.text_fields)

    def instruction(self) -> str:
        return self.templates.instruction.replace("{choices}", _choices(self.words))

    def format(self, example: Mapping[str, Any], family: str, sep: str | None = None) -> str:
        """Input text of ``example`` for a backbone family ("seq2seq" | "decoder" | "encoder")."""
        values = self.text_values(example)
        if family == "seq2seq":
            prefix = self.templates.seq2seq_prefix or self.name
            parts = [prefix] + [f"{f}: {v}" for f, v in zip(self.text_fields, values)]
            return " ".join(parts)
        if family == "decoder":
            lines = [self.instruction()]
            lines += [f"{t}: {v}" for t, v in zip(self.field_titles(), values)]
            lines.append("Answer:")
            return "\n".join(lines)
        if family == "encoder":
            return (" | " if sep is None else sep).join(values)
        raise ValueError(f"unknown backbone family {family!r}; expected one of {BACKBONE_FAMILIES}")

    # ---- tables -------------------------------------------------------------------------
    def source(self) -> str:
        parts = []
        if self.custom:
            parts.append(f"custom: {self.data_dir or self.source_path}")
        if self.bundled:
            parts.append(f"bundled: data/tasks/{self.bundled}")
        if self.hub_id:
            parts.append("hub: " + self.hub_id + (f" ({self.hub_config})" if self.hub_config else ""))
        return "; ".join(parts) or "none"

    def describe(self, sizes: Mapping[str, int | None] | None = None) -> dict[str, Any]:
        """A flat dict for tables; ``sizes`` (rows per split, `tpv_core.tasks.describe_task` reads them from
        the data files) is included when given."""
        d: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "family": self.family,
            "paper": self.paper,
            "fields": list(self.text_fields),
            "labels": list(self.label_names) if not self.regression else "0..5 (0.2 grid)",
            "num_labels": self.num_labels,
            "words": list(self.words),
            "metrics": list(self.metrics),
            "regression": self.regression,
            "source": self.source(),
            "caveats": list(self.caveats),
        }
        if sizes is not None:
            d["sizes"] = dict(sizes)
        return d

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in names:
                continue
            if k == "templates":
                t = dict(v or {})
                t["field_titles"] = tuple(t.get("field_titles", ()))
                v = Templates(**{k2: t[k2] for k2 in ("instruction", "field_titles", "seq2seq_prefix") if k2 in t})
            elif k == "hub_label_map":
                v = tuple((str(a), int(b)) for a, b in v)
            elif isinstance(v, list):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)


def parse_jsonl(lines: Iterable[str], path: object, error: type[Exception], limit: int | None = None) -> list[dict]:
    """JSON objects, one per non-blank line; a bad line raises ``error`` naming ``path:line``."""
    rows: list[dict] = []
    for lineno, line in enumerate(lines, 1):
        if limit is not None and len(rows) >= limit:
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{lineno}: expected one JSON object per line")
        rows.append(row)
    return rows
