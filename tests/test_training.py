import socket

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from tpv_core.evaluation import evaluate, iter_evaluate, prepare_split
from tpv_core.prompts import make_origin
from tpv_core.tasks import get_task, load_split
from tpv_core.prompts import PromptMismatchError, SoftPrompt
from tpv_core.training import TrainConfig, check_readout, stale_validations, tune_prompt

TASK = "sentences_yelp"


def small_cfg(**kw):
    base = dict(steps=8, batch_size=8, eval_every=4, eval_limit=16, lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def test_training_learns_and_touches_only_the_prompt(minilm):
    task = get_task(TASK)
    origin = make_origin(minilm, seed=0, length=8)
    before = {k: v.clone() for k, v in minilm.model.state_dict().items()} if hasattr(minilm, "model") else None
    res = tune_prompt(minilm, task, origin, TrainConfig(steps=30, batch_size=8, eval_every=30, eval_limit=32, lr=0.05))
    losses = res.history["loss"].dropna().tolist()
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8  # the training loss goes down
    assert not torch.equal(res.prompt.tensor, origin.tensor)
    assert res.prompt.task == TASK and res.prompt.metadata["steps"] == 30
    assert res.prompt.metadata["training"]["lr"] == 0.05
    if before is not None:
        after = minilm.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_deterministic_for_a_seed(minilm):
    task = get_task(TASK)
    origin = make_origin(minilm, seed=1, length=4)
    cfg = dict(steps=4, eval_every=None)
    a = tune_prompt(minilm, task, origin, small_cfg(**cfg)).prompt.tensor
    b = tune_prompt(minilm, task, origin, small_cfg(**cfg)).prompt.tensor
    c = tune_prompt(minilm, task, origin, small_cfg(data_seed=5, **cfg)).prompt.tensor
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_cancel_and_resume(minilm):
    task = get_task(TASK)
    origin = make_origin(minilm, seed=2, length=4)
    seen = []
    res = tune_prompt(minilm, task, origin, small_cfg(eval_every=None), progress=lambda p: seen.append(p.step),
                      cancel=lambda: len(seen) >= 3)
    assert res.cancelled and res.prompt.metadata["steps"] == 3 and seen == [1, 2, 3]
    more = tune_prompt(minilm, task, origin, small_cfg(), resume=res.prompt)
    assert more.prompt.metadata["steps"] == 8 and more.history.dropna(subset=["loss"])["step"].min() == 4
    assert more.history.iloc[0]["step"] == 3 and pd.isna(more.history.iloc[0]["loss"])  # the start, validated


def test_patience_stops_once_validation_stops_improving(minilm):
    task = get_task(TASK)
    origin = make_origin(minilm, seed=0, length=4)
    # lr 1e-12 leaves the prompt as it is (below float32 resolution): no validation beats step 0's
    res = tune_prompt(minilm, task, origin, small_cfg(steps=20, eval_every=2, lr=1e-12, patience=2))
    meta = res.prompt.metadata
    assert meta["steps"] == 4 and meta["stopped_early"] and meta["best_step"] == 0
    assert res.history["step"].max() == 4 and meta["training"]["patience"] == 2
    assert torch.equal(res.prompt.tensor, origin.tensor)
    full = tune_prompt(minilm, task, origin, small_cfg(steps=6, eval_every=2, lr=1e-12))
    assert full.prompt.metadata["steps"] == 6 and not full.prompt.metadata["stopped_early"]
    with pytest.raises(ValueError, match="patience"):
        tune_prompt(minilm, task, origin, small_cfg(patience=0))


def test_continuing_a_stored_prompt_starts_from_its_validation_score(minilm):
    """A resumed prompt's first candidate is the stored prompt itself: a continuation that only gets worse
    on validation returns the stored tensor (and its best step), never a worse one."""
    task = get_task(TASK)
    origin = make_origin(minilm, seed=1, length=4)
    first = tune_prompt(minilm, task, origin, small_cfg(steps=4, eval_every=2))
    on = first.prompt.metadata["best_step"]
    # lr 1e-12: the continuation cannot change the prompt, so no later validation beats the starting one
    more = tune_prompt(minilm, task, origin, small_cfg(steps=8, eval_every=2, lr=1e-12), resume=first.prompt)
    assert more.history.dropna(subset=["val_accuracy"])["step"].tolist() == [4, 6, 8]
    assert torch.equal(more.prompt.tensor, first.prompt.tensor) and more.prompt.metadata["best_step"] == on
    assert more.prompt.metadata["steps"] == 8


def test_stale_validations_continue_from_a_checkpoints_history():
    history = [{"step": 0, "val_accuracy": 0.5}, {"step": 1, "loss": 0.7}, {"step": 2, "val_accuracy": 0.6},
               {"step": 4, "val_accuracy": 0.55}, {"step": 6, "val_accuracy": 0.6, "loss": 0.6}]
    assert stale_validations(history, 2, "accuracy") == 2
    assert stale_validations(history, 6, "accuracy") == 0
    assert stale_validations(history, 0, "f1") == 0


def test_k_shot_and_multitask(minilm):
    a, b = get_task("sentences_yelp"), get_task("sentences_imdb")
    origin = make_origin(minilm, seed=0, length=4)
    res = tune_prompt(minilm, a, origin, small_cfg(k_shot=6, steps=2, eval_every=None))
    assert res.prompt.metadata["training"]["train_rows"] == 6
    multi = tune_prompt(minilm, [a, b], origin, small_cfg(steps=4))
    assert multi.prompt.task == "sentences_yelp+sentences_imdb"
    with pytest.raises(ValueError, match="k"):
        tune_prompt(minilm, a, origin, small_cfg(k_shot=100000))


def test_prompts_record_their_readout(minilm):
    """A pair task on the encoder is tuned under the similarity readout and says so; a prompt tuned under
    another readout (every encoder prompt stored before readouts were recorded) is refused, not misread."""
    rte, sst = get_task("rte"), get_task(TASK)
    origin = make_origin(minilm, seed=0, length=4)
    res = tune_prompt(minilm, rte, origin, small_cfg(steps=2, eval_every=None))
    assert res.prompt.metadata["readout"] == {"rte": "similarity"}
    assert check_readout(res.prompt, minilm, rte) is res.prompt
    old_meta = {k: v for k, v in res.prompt.metadata.items() if k != "readout"}
    old = SoftPrompt(res.prompt.tensor, origin, "rte", minilm.name, old_meta)
    with pytest.raises(PromptMismatchError, match="tuned for the 'descriptions' readout.*tpv train"):
        check_readout(old, minilm, rte)
    with pytest.raises(PromptMismatchError, match="descriptions"):
        tune_prompt(minilm, rte, origin, small_cfg(steps=4, eval_every=None), resume=old)
    imported = SoftPrompt(res.prompt.tensor, origin, "rte", minilm.name, {"source": "peft-import"})
    assert check_readout(imported, minilm, rte) is imported  # unknown readout (an imported adapter): accepted
    single = tune_prompt(minilm, sst, origin, small_cfg(steps=1, eval_every=None)).prompt
    assert single.metadata["readout"] == {TASK: "descriptions"}


def test_origin_checks(minilm):
    task = get_task(TASK)
    bad = make_origin(embeddings=torch.randn(6000, 8), backbone_name=minilm.name, length=4)
    with pytest.raises(ValueError, match="width"):
        tune_prompt(minilm, task, bad, small_cfg())
    other = make_origin(embeddings=torch.randn(6000, minilm.dim), backbone_name="other", length=4)
    with pytest.raises(ValueError, match="backbone"):
        tune_prompt(minilm, task, other, small_cfg())


def test_iter_evaluate_running_estimate(minilm):
    task = get_task(TASK)
    origin = make_origin(minilm, seed=0, length=4)
    prepared = prepare_split(minilm, task, "validation", limit=40)
    results = list(iter_evaluate(minilm, task, origin.tensor, prepared, batch_size=16))
    assert [r.n for r in results] == [8, 24, 40] and [r.partial for r in results] == [True, True, False]  # 8 first
    even = list(iter_evaluate(minilm, task, origin.tensor, prepared, batch_size=16, first_batch_size=None))
    assert [r.n for r in even] == [16, 32, 40] and even[-1].predictions == results[-1].predictions
    final = results[-1]
    assert set(final.metrics) >= {"accuracy", "f1"} and 0 <= final.metrics["accuracy"] <= 1
    # the reported accuracy is the argmax of the backbone's label scores
    batch = minilm.collate(prepared.ids)
    with torch.no_grad():
        pred = minilm.label_scores(batch, origin.tensor, task.label_set()).argmax(-1)
    acc = (pred == torch.tensor(prepared.targets)).float().mean().item()
    assert final.metrics["accuracy"] == pytest.approx(acc, abs=1e-6)
    none = evaluate(minilm, task, None, prepared)
    assert none.n == 40
    with pytest.raises(ValueError, match="cannot generate"):
        evaluate(minilm, task, None, prepared, method="generate")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from tpv_core.backbones import load_backbone

    bb = load_backbone("minilm-l6", device="cpu", precision="fp32")
    origin = make_origin(bb, seed=0, length=4)
    res = tune_prompt(bb, get_task(TASK), origin, TrainConfig(steps=3, batch_size=4, eval_every=None, lr=0.05))
    if rank == 0:
        out.put(res.prompt.tensor)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_data_parallel_matches_doubled_batch(minilm_fp32):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    ddp = q.get(timeout=240)
    for p in procs:
        p.join(timeout=60)
    origin = make_origin(minilm_fp32, seed=0, length=4)
    single = tune_prompt(minilm_fp32, get_task(TASK), origin,
                         TrainConfig(steps=3, batch_size=8, eval_every=None, lr=0.05)).prompt.tensor
    assert torch.allclose(ddp, single, atol=1e-4), (ddp - single).abs().max()


def test_length_grouped_batches_cover_every_row_with_less_padding(minilm):
    from tpv_core.training import _Stream

    task = get_task("sst2")
    rows = load_split(task, "train")[:400]

    def padding(grouped: bool) -> tuple[float, list[int]]:
        stream = _Stream(minilm, task, rows, TrainConfig(group_by_length=grouped), seed=3)
        seen, pad = [], 0.0
        for _ in range(len(rows) // 8):
            idx = stream.next_indices(8, 0, 8)
            lens = [len(stream.ids[i]) for i in idx]
            pad += sum(max(lens) - n for n in lens) / (max(lens) * len(lens))
            seen += idx
        return pad / (len(rows) // 8), seen

    plain, seen_plain = padding(False)
    grouped, seen_grouped = padding(True)
    assert sorted(seen_grouped) == sorted(seen_plain) == list(range(len(rows)))  # one pass = every row once
    assert grouped < plain / 3


def test_eta_counts_only_training_steps():
    from tpv_core.training import Progress

    # 10 s of set-up, then 2 steps in 4 s: 8 steps left at 2 s each
    p = Progress(step=2, steps=10, loss=0.5, lr=0.1, elapsed_s=14.0, loop_s=4.0)
    assert p.eta_s == pytest.approx(16.0)
    resumed = Progress(step=6, steps=10, loss=0.5, lr=0.1, elapsed_s=9.0, loop_s=2.0, first_step=4)
    assert resumed.eta_s == pytest.approx(4.0)
