"""Job bodies for the app's queue: thin adapters that run a workflow and turn its structured events into
job status (:class:`~tpv_core.app.jobs.JobContext` updates). The work itself is the workflow's, the same
the ``tpv`` command runs."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from tpv_core.app.jobs import BackboneLoader, JobCancelled, JobContext, JobQueue
from tpv_core.experiments.fewshot import FewshotProgress
from tpv_core.workflows.fewshot import FewshotCancelled, FewshotRequest, run_fewshot_request
from tpv_core.workflows.train import TrainEvent, TrainRequest, train_request


def training_job(request: TrainRequest, loader: BackboneLoader) -> Callable[[JobContext], list[str]]:
    """A job that trains ``request`` into its store (the train workflow's retrain rule); returns the saved
    paths."""

    def body(ctx: JobContext) -> list[str]:
        ctx.update(message=f"loading {request.backbone}", phase="loading model", phase_fraction=0.0)
        backbone = loader(request.backbone)
        ctx.check()
        steps = request.config.resolved(backbone.family).steps
        ctx.update(phase="reading the task data", phase_fraction=0.25)

        def on_event(e: TrainEvent) -> None:
            it = e.item
            if e.kind == "skip":
                ctx.add_skipped(it.what)
                ctx.update(item=e.index + 1, message=f"skipped {it.what}: {it.reason}")
            elif e.kind == "start":
                note = f" ({it.reason})" if it.reason else ""
                ctx.update(current=it.what, step=0, steps=steps, loss=None, val_score=None, best_score=None,
                           eta_s=None, message=f"preparing {it.what}{note}",
                           phase="tokenizing the rows, first validation", phase_fraction=0.5)
            elif e.kind == "step":
                p = e.progress
                fields: dict[str, Any] = dict(step=p.step, steps=p.steps, loss=p.loss, eta_s=p.eta_s,
                                              best_score=p.best_score, message="training", phase="",
                                              phase_fraction=1.0)
                if p.val_score is not None:
                    fields["val_score"] = p.val_score
                ctx.update(**fields)
                ctx.add_point(it.what, p.step, p.loss, p.val_score)  # the live curve
            elif e.kind == "saved":
                ctx.add_saved(e.path)
                ctx.update(item=e.index + 1, message=f"saved {it.what}")

        tagged = dataclasses.replace(request, metadata={"source": "app", **request.metadata})
        outcome = train_request(backbone, tagged, on_event=on_event, cancel=ctx.cancelled)
        if outcome.cancelled or ctx.cancelled():
            raise JobCancelled()
        ctx.update(item=len(request.items()),
                   message=f"{len(outcome.saved)} prompt(s) saved to {request.store_root}")
        return outcome.saved

    return body


def submit_training(queue: JobQueue, request: TrainRequest, loader: BackboneLoader) -> int:
    request.validate()
    return queue.submit_callable(training_job(request, loader), request.label(), kind="train",
                                 items=len(request.items()))


def fewshot_job(request: FewshotRequest, backbone: str, loader: BackboneLoader) -> Callable[[JobContext], dict]:
    """A job that runs a few-shot request; progress counts finished runs (structured, not parsed text)."""

    def body(ctx: JobContext) -> dict:
        ctx.update(message=f"loading {backbone}")
        bb = loader(backbone)
        ctx.check()

        def on_run(p: FewshotProgress) -> None:
            msg = "starting" if p.row is None else (f"k={p.row['k']} {p.row['init']} seed {p.row['seed']}: "
                                                    f"{p.row['metric']} {p.row['score']:.3f}")
            ctx.update(item=p.done, items=max(p.total, 1), step=p.done, steps=p.total, message=msg)

        try:
            res = run_fewshot_request(bb, request, on_run=on_run, progress=lambda m: ctx.update(message=m),
                                      cancel=ctx.cancelled)
        except FewshotCancelled:
            raise JobCancelled() from None
        return {"out": request.out, "notes": res.notes}

    return body


def submit_fewshot(queue: JobQueue, request: FewshotRequest, backbone: str, loader: BackboneLoader) -> int:
    return queue.submit_callable(fewshot_job(request, backbone, loader), request.label(backbone), kind="fewshot",
                                 items=request.planned_runs() or 1)
