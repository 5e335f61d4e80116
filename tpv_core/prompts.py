"""Soft prompts, their origins, and task prompt vectors.

The paper's objects, in its own language:

* an *origin* P0 is the (L x d) initial soft prompt, made from a seed;
* a *soft prompt* P is the tensor tuned on a task for a frozen model, starting at P0;
* a *task prompt vector* tau = P - P0 (Belanec et al., Eq. 1). Vectors add, subtract, negate and scale
  like task vectors (Ilharco et al.), and ``tau.apply_to(origin, coef)`` = P0 + coef * tau gives a prompt.

A vector remembers which tasks it is made of (with signed weights), so tables and plots can label a
combination such as ``0.5*mnli + 0.5*qnli``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

import torch

from tpv_core.finite import NonFiniteValueError, require_finite, require_finite_number  # noqa: F401 (re-exported)

ORIGIN_KINDS = ("vocab", "normal", "uniform")


class PromptMismatchError(ValueError):
    """Two prompts or vectors that cannot be combined (backbone, shape or origin disagree)."""


class EmbeddingSource(Protocol):
    """What :func:`make_origin` needs from a backbone."""

    name: str

    def input_embeddings(self) -> torch.Tensor: ...


@dataclass(frozen=True)
class Origin:
    """How an initial prompt P0 was made, plus the tensor itself.

    ``kind``: ``vocab`` (embeddings of ``length`` tokens sampled without replacement from the first
    ``vocab_limit`` vocabulary ids, as the paper), ``normal`` (N(0, std^2) with the std of the
    embedding matrix) or ``uniform`` (U(-0.5, 0.5), PEFT's random init).
    """

    backbone: str
    kind: str
    seed: int
    length: int
    dim: int
    vocab_limit: int = 5000
    tensor: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        """Stable, file-name safe identifier, e.g. ``vocab5000-s0-L20``."""
        kind = f"vocab{self.vocab_limit}" if self.kind == "vocab" else self.kind
        return f"{kind}-s{self.seed}-L{self.length}"

    def spec(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "kind": self.kind,
            "seed": self.seed,
            "length": self.length,
            "dim": self.dim,
            "vocab_limit": self.vocab_limit,
            "id": self.id,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], tensor: torch.Tensor | None = None) -> "Origin":
        if not isinstance(spec, Mapping):
            raise ValueError(f"an origin spec is an object with backbone, kind, seed, length, dim; got {spec!r:.200}")
        try:
            return cls(
                backbone=str(spec["backbone"]),
                kind=str(spec["kind"]),
                seed=int(spec["seed"]),
                length=int(spec["length"]),
                dim=int(spec["dim"]),
                vocab_limit=int(spec.get("vocab_limit", 5000)),
                tensor=tensor,
            )
        except KeyError as exc:
            raise ValueError(f"origin spec is missing the field {exc.args[0]!r}: {dict(spec)}") from None
        except (TypeError, ValueError, AttributeError):
            raise ValueError(f"origin spec has a field of the wrong type (seed, length, dim and vocab_limit are "
                             f"integers): {spec!r:.200}") from None

    def require_tensor(self) -> torch.Tensor:
        if self.tensor is None:
            raise ValueError(f"origin {self.id} of {self.backbone} carries no tensor; rebuild it with make_origin")
        return self.tensor


def _seed_generator(seed: int, *parts: str) -> torch.Generator:
    """A generator seeded by ``seed`` alone (plus fixed labels), never by what was drawn before."""
    digest = hashlib.sha256(("/".join([str(seed), *parts])).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def make_origin(
    backbone: EmbeddingSource | None = None,
    kind: str = "vocab",
    seed: int = 0,
    length: int = 20,
    vocab_limit: int = 5000,
    *,
    embeddings: torch.Tensor | None = None,
    backbone_name: str | None = None,
) -> Origin:
    """Make the initial prompt P0 for ``seed``; the same arguments always give the same tensor.

    Pass a backbone (anything with ``name`` and ``input_embeddings()``), or ``embeddings`` (V x d) and
    ``backbone_name`` directly.
    """
    if kind not in ORIGIN_KINDS:
        raise ValueError(f"unknown origin kind {kind!r}; choose one of {', '.join(ORIGIN_KINDS)}")
    if length < 0:
        raise ValueError(f"prompt length must be >= 0, got {length}")
    if backbone is not None and kind == "vocab" and hasattr(backbone, "input_embedding_rows"):  # the rows only
        if length > (limit := min(vocab_limit, int(backbone.vocab_size))):
            raise ValueError(f"cannot sample {length} distinct tokens from the first {limit} ids")
        rows = backbone.input_embedding_rows(torch.randperm(limit, generator=_seed_generator(seed, kind))[:length])
        return Origin(backbone.name, kind, int(seed), int(length), int(backbone.dim), int(vocab_limit), rows)
    if backbone is not None:
        embeddings = backbone.input_embeddings()
        backbone_name = backbone.name
    if embeddings is None or backbone_name is None:
        raise ValueError("make_origin needs a backbone, or both embeddings= and backbone_name=")
    if embeddings.dim() != 2:
        raise ValueError(f"embedding matrix must be 2-D (V x d), got shape {tuple(embeddings.shape)}")
    vocab, dim = embeddings.shape
    emb = embeddings.detach().float().cpu()
    gen = _seed_generator(seed, kind)
    if kind == "vocab":
        limit = min(vocab_limit, vocab)
        if length > limit:
            raise ValueError(f"cannot sample {length} distinct tokens from the first {limit} ids")
        ids = torch.randperm(limit, generator=gen)[:length]
        tensor = emb[ids].clone()
    elif kind == "normal":
        tensor = torch.randn(length, dim, generator=gen) * emb.std()
    else:
        tensor = torch.rand(length, dim, generator=gen) - 0.5
    return Origin(backbone_name, kind, int(seed), int(length), int(dim), int(vocab_limit), tensor.contiguous())


def _check_matrix(t: torch.Tensor, what: str, length: int | None = None, dim: int | None = None) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{what} must be a 2-D (L x d) tensor, got {shape}")
    if length is not None and t.shape[0] != length or dim is not None and t.shape[1] != dim:
        raise ValueError(f"{what} has shape {tuple(t.shape)}, expected ({length}, {dim})")


@dataclass
class SoftPrompt:
    """A tuned prompt P with the origin P0 it started from and how it was made."""

    tensor: torch.Tensor
    origin: Origin
    task: str
    backbone: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_matrix(self.tensor, f"prompt for {self.task}")
        if self.origin.backbone != self.backbone:
            raise PromptMismatchError(
                f"prompt for {self.task} is on backbone {self.backbone!r} but its origin {self.origin.id} "
                f"is on {self.origin.backbone!r}"
            )
        if tuple(self.tensor.shape) != (self.origin.length, self.origin.dim):
            raise PromptMismatchError(
                f"prompt for {self.task} has shape {tuple(self.tensor.shape)} but its origin {self.origin.id} "
                f"is ({self.origin.length}, {self.origin.dim})"
            )
        if self.origin.tensor is not None and self.origin.tensor.shape != self.tensor.shape:
            raise PromptMismatchError(
                f"origin tensor {tuple(self.origin.tensor.shape)} and prompt {tuple(self.tensor.shape)} differ"
            )

    @property
    def length(self) -> int:
        return int(self.tensor.shape[0])

    @property
    def dim(self) -> int:
        return int(self.tensor.shape[1])

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.metadata.get("metrics", {}))

    def vector(self) -> "TaskPromptVector":
        """tau = P - P0."""
        p0 = self.origin.require_tensor()
        return TaskPromptVector(
            tensor=(self.tensor.float() - p0.float()),
            backbone=self.backbone,
            terms=((self.task, 1.0),),
            origin_ids=(self.origin.id,),
        )


def _fmt_weight(w: float) -> str:
    return f"{w:g}"


@dataclass(frozen=True)
class TaskPromptVector:
    """tau = P - P0 for one task, or a weighted combination of such vectors.

    ``terms`` lists (task, weight) pairs, e.g. ``(("mnli", 1.0), ("sst2", -0.5))``; ``origin_ids`` the
    origins the vectors were computed from (a combination across origins is allowed: that is the
    cross-origin experiment).
    """

    tensor: torch.Tensor
    backbone: str
    terms: tuple[tuple[str, float], ...]
    origin_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_matrix(self.tensor, f"task prompt vector {self.label}")

    # --- labels -------------------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.terms)

    @property
    def label(self) -> str:
        parts = []
        for i, (task, w) in enumerate(self.terms):
            sign = "-" if w < 0 else ("+" if i else "")
            mag = abs(w)
            body = task if mag == 1.0 else f"{_fmt_weight(mag)}*{task}"
            parts.append(f"{sign}{body}" if not i else f" {sign} {body}")
        return "".join(parts) if parts else "0"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.tensor.shape)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"TaskPromptVector({self.label}, backbone={self.backbone!r}, shape={self.shape})"

    # --- arithmetic ---------------------------------------------------------------------------
    def _check_compatible(self, other: "TaskPromptVector") -> None:
        if not isinstance(other, TaskPromptVector):
            raise TypeError(f"cannot combine a task prompt vector with {type(other).__name__}")
        if self.backbone != other.backbone:
            raise PromptMismatchError(
                f"cannot combine vectors of different backbones: {self.label} is on {self.backbone!r}, "
                f"{other.label} is on {other.backbone!r}"
            )
        if self.shape != other.shape:
            raise PromptMismatchError(
                f"cannot combine vectors of different shapes: {self.label} is {self.shape}, "
                f"{other.label} is {other.shape} (prompt length or width differ)"
            )

    @staticmethod
    def _merge_terms(a: Iterable[tuple[str, float]], b: Iterable[tuple[str, float]]) -> tuple:
        merged: dict[str, float] = {}
        for task, w in [*a, *b]:
            merged[task] = merged.get(task, 0.0) + float(w)
        return tuple((t, w) for t, w in merged.items())

    @staticmethod
    def _merge_origins(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*a, *b]))

    def __add__(self, other: "TaskPromptVector") -> "TaskPromptVector":
        if isinstance(other, int) and other == 0:  # lets the built-in sum() start from 0
            return self
        self._check_compatible(other)
        return TaskPromptVector(
            self.tensor + other.tensor,
            self.backbone,
            self._merge_terms(self.terms, other.terms),
            self._merge_origins(self.origin_ids, other.origin_ids),
        )

    __radd__ = __add__

    def __neg__(self) -> "TaskPromptVector":
        return TaskPromptVector(-self.tensor, self.backbone, tuple((t, -w) for t, w in self.terms), self.origin_ids)

    def __sub__(self, other: "TaskPromptVector") -> "TaskPromptVector":
        self._check_compatible(other)
        return self + (-other)

    def __mul__(self, coef: float) -> "TaskPromptVector":
        if isinstance(coef, torch.Tensor):
            if coef.numel() != 1:
                raise TypeError("a task prompt vector can only be scaled by a scalar")
            coef = float(coef)
        if not isinstance(coef, (int, float)):
            return NotImplemented
        coef = require_finite_number(coef, f"the coefficient of {self.label}")
        return TaskPromptVector(
            self.tensor * float(coef), self.backbone, tuple((t, w * float(coef)) for t, w in self.terms), self.origin_ids
        )

    __rmul__ = __mul__

    @staticmethod
    def sum(vectors: Sequence["TaskPromptVector"], weights: Sequence[float] | None = None) -> "TaskPromptVector":
        """Sum of vectors, optionally weighted (``weights[i] * vectors[i]``)."""
        vectors = list(vectors)
        if not vectors:
            raise ValueError("sum() needs at least one task prompt vector")
        if weights is not None and len(weights) != len(vectors):
            raise ValueError(f"got {len(weights)} weights for {len(vectors)} vectors")
        if weights is not None:
            weights = [require_finite_number(w, f"weight {i + 1} ({v.label})") for i, (v, w) in
                       enumerate(zip(vectors, weights))]
        scaled = vectors if weights is None else [v * w for v, w in zip(vectors, weights)]
        total = scaled[0]
        for v in scaled[1:]:
            total = total + v
        return total

    # --- use ----------------------------------------------------------------------------------
    def apply_to(self, origin: Origin | torch.Tensor, coef: float = 1.0) -> torch.Tensor:
        """P0 + coef * tau: the prompt tensor to evaluate or to start training from."""
        if isinstance(origin, Origin):
            if origin.backbone != self.backbone:
                raise PromptMismatchError(
                    f"vector {self.label} is on backbone {self.backbone!r} but origin {origin.id} is on "
                    f"{origin.backbone!r}"
                )
            p0 = origin.require_tensor()
            what = f"origin {origin.id}"
        else:
            p0 = origin
            what = "origin tensor"
        if tuple(p0.shape) != self.shape:
            raise PromptMismatchError(f"vector {self.label} has shape {self.shape} but {what} is {tuple(p0.shape)}")
        coef = require_finite_number(coef, "the coefficient (lambda)")
        return require_finite(p0.float() + coef * self.tensor.float(), f"P0 + {coef:g} * ({self.label})")

    def norm(self) -> float:
        return float(self.tensor.float().norm())
