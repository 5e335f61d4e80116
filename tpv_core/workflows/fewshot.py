"""A few-shot job: the one description of a few-shot run that ``tpv experiment fewshot`` and the app's
Few-shot page both build, run through :func:`tpv_core.experiments.fewshot.run_fewshot` with structured
progress (:class:`~tpv_core.experiments.fewshot.FewshotProgress`: runs done of the total)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from tpv_core.experiments.common import ExperimentResult
from tpv_core.experiments.fewshot import DEFAULT_KS, INITS, FewshotProgress, init_names, run_fewshot
from tpv_core.store import PromptStore
from tpv_core.tasks import TaskSpec, get_task
from tpv_core.tasks.sources import with_source
from tpv_core.training import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones.base import Backbone


class FewshotCancelled(Exception):
    """Raised between runs when the caller's ``cancel()`` turned true (finished runs stay in the log)."""


@dataclass(frozen=True)
class FewshotRequest:
    target: str
    sources: tuple[str, ...]
    out: str
    store_root: str
    ks: tuple[int, ...] = DEFAULT_KS
    seeds: tuple[int, ...] | None = None  # None: every origin seed the sources share
    length: int | None = None  # the prompt length L of the source prompts (None: `choose_length`)
    data_seeds: tuple[int, ...] | None = None  # None: each origin's seed draws its k rows (one cell per origin)
    inits: tuple[str, ...] = INITS
    steps: int | None = None
    lr: float | None = None
    train_batch_size: int | None = None
    eval_limit: int | None = 200  # validation rows for best-prompt selection
    eval_every: int | None = None
    split: str = "test"
    limit: int | None = None  # rows of the scored split
    batch_size: int = 32  # evaluation batch
    recipe: str = "demo"  # training recipe of every init (tpv_core.recipes); the fields above override it
    epochs: float | None = None
    source: str = "auto"  # task data: auto | bundled | hub (tpv_core.tasks.sources)
    data_dir: str | None = None  # a folder of full local task copies
    metadata: dict = field(default_factory=dict, compare=False)
    strict_ks: bool = False  # True: a k above the target's training rows is an error, not capped

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        object.__setattr__(self, "inits", tuple(self.inits))
        for name in ("seeds", "data_seeds"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(int(s) for s in getattr(self, name)))

    def config(self) -> TrainConfig:
        """The recipe's TrainConfig with this request's explicit fields over it (``eval_limit="all"``: the whole
        validation split)."""
        from tpv_core.recipes import train_config

        cfg, _ = train_config(self.recipe, {"steps": self.steps, "lr": self.lr, "batch_size": self.train_batch_size,
                                            "epochs": self.epochs, "eval_limit": self.eval_limit,
                                            "eval_every": self.eval_every})
        return cfg

    def tasks(self) -> tuple[TaskSpec, list[TaskSpec]]:
        """The target and source specs, bound to the request's data source."""
        def bound(name: str) -> TaskSpec:
            return with_source(get_task(name, self.store_root), self.source, self.data_dir)

        return bound(self.target), [bound(s) for s in self.sources]

    def planned_runs(self) -> int | None:
        """Runs the request asks for (before k is capped at the target's training rows); None while the seeds
        are left to the store."""
        if self.seeds is None:
            return None
        ks, n_data = set(self.ks), len(set(self.data_seeds or (0,)))
        cells = (len(ks - {0}) * n_data + (0 in ks)) * len(self.seeds)  # k = 0 once per origin
        return cells * len(init_names(self.inits, self.sources))

    def label(self, backbone: str) -> str:
        return f"few-shot {self.target} ← {' + '.join(self.sources)} on {backbone}"


def run_fewshot_request(backbone: "Backbone", request: FewshotRequest, *,
                        on_run: Callable[[FewshotProgress], None] | None = None,
                        progress: Callable[[str], None] | None = None,
                        cancel: Callable[[], bool] | None = None) -> ExperimentResult:
    """Run (or resume) the request's few-shot grid; ``cancel()`` is checked after every run."""

    def runs(p: FewshotProgress) -> None:
        if on_run:
            on_run(p)
        if cancel is not None and cancel():
            raise FewshotCancelled(f"cancelled after {p.done} of {p.total} runs")

    target, sources = request.tasks()
    return run_fewshot(backbone, PromptStore(request.store_root), target, sources,
                       request.out, ks=list(request.ks), seeds=list(request.seeds) if request.seeds else None,
                       data_seeds=list(request.data_seeds) if request.data_seeds else None,
                       inits=list(request.inits), config=request.config(), split=request.split,
                       limit=request.limit, batch_size=request.batch_size, progress=progress, on_run=runs,
                       strict_ks=request.strict_ks, length=request.length)
