"""Which readout a stored prompt was tuned under, and the check that refuses a prompt tuned under another.

A backbone reads a task's classes one way (`Backbone.readout`: verbalisers, label descriptions, or the
similarity of two fields); a prompt tuned under one readout scores near chance under another, so
evaluation, the experiments and the app refuse such a prompt (with the command that retrains it) and
`tpv train` retrains it instead of skipping it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tpv_core.prompts import PromptMismatchError, SoftPrompt

if TYPE_CHECKING:  # pragma: no cover
    from tpv_core.backbones import Backbone
    from tpv_core.tasks import TaskSpec

__all__ = ["check_readout", "tuned_readout"]


def tuned_readout(prompt: SoftPrompt, task: str) -> str | None:
    """The readout ``prompt`` was tuned under for ``task`` (see `Backbone.readout`); None when unknown (an
    imported PEFT adapter). Prompts this library stored before readouts were recorded were all tuned under
    their family's default (descriptions on encoders)."""
    recorded = (prompt.metadata.get("readout") or {}).get(task)
    if recorded:
        return str(recorded)
    family = prompt.metadata.get("backbone_family")
    if family is None:
        return None
    return "descriptions" if family == "encoder" else "verbalisers"


def check_readout(prompt: SoftPrompt, backbone: "Backbone", task: "TaskSpec") -> SoftPrompt:
    """``prompt``, unless it is known to have been tuned under another readout than the one ``backbone``
    uses for ``task``: then a `PromptMismatchError` naming the fix (such a prompt scores near chance)."""
    if prompt.dim != getattr(backbone, "dim", prompt.dim):
        raise PromptMismatchError(
            f"the {prompt.task} prompt from origin {prompt.origin.id} is a {prompt.length} x {prompt.dim} prompt for "
            f"{prompt.backbone!r}, but {backbone.name} has width {backbone.dim}; use a prompt of this backbone")
    have, want = tuned_readout(prompt, task.name), backbone.readout(task)
    if have is not None and have != want:
        raise PromptMismatchError(
            f"the {prompt.task} prompt from origin {prompt.origin.id} was tuned for the {have!r} readout, but "
            f"{backbone.name} reads {task.name} by {want!r}; retrain it: tpv train --backbone {backbone.name} "
            f"--task {task.name} --origin {prompt.origin.seed}")
    return prompt
