"""1. Training throughput of ``tune_prompt`` against PEFT prompt tuning + HF ``Trainer``;
2. model FLOP utilisation (MFU) of our training step.

Same backbone weights, task, training split (the whole split, as a user's run), prompt length, batch
size, max length, optimizer hyper-parameters (AdamW, lr, weight decay, 6 % warmup + linear decay,
clip 1.0) and number of steps. Contenders, interleaved round by round:

* ``ours``: ``tune_prompt`` as it ships: default ``TrainConfig`` (length-grouped batches), validation
  off (``eval_every=0``), precision ``auto`` (bf16 autocast where the CPU/GPU has native bf16, and then
  eager attention on CPU; fp32 otherwise).
* ``peft-default``: ``get_peft_model(model, PromptTuningConfig(...))`` + ``Trainer`` with its
  defaults (fp32, ``adamw_torch_fused``, random sampler, dataloader defaults). Only logging/saving/tqdm
  are off and ``remove_unused_columns=False``.
* ``peft-best``: the same plus ``train_sampling_strategy="group_by_length"`` (less padding),
  ``bf16=True`` (autocast) where ours computes in bf16 (the same rule: on a CPU without native bf16,
  bf16 matmuls are hundreds of times slower), ``dataloader_pin_memory=False`` on CPU.
* ``peft-best-eager`` (full runs, only where our backbone runs eager attention): ``peft-best`` on a
  model loaded with ``attn_implementation="eager"`` (a PEFT user who also adopts our attention choice).

Every contender draws its batches from the whole split with its own sampler, so the rows differ:
ratios are taken on tokens/s (soft prompt + real input tokens; padding excluded).

Encoder (MiniLM): PEFT has no sentence-embedding task type, so ``TaskType.FEATURE_EXTRACTION`` (the
soft prompt goes before [CLS]; ours goes after it: same compute) and a ``Trainer`` subclass whose
``compute_loss`` mean-pools the last hidden state over prompt + real tokens and takes the cross-entropy
of cosine(pooled, label-description embedding) / 0.05: our loss. The description embeddings are
computed once before training (as ours caches them), so PEFT is not charged for them.
Decoder (SmolLM2): ``TaskType.CAUSAL_LM``, input = templated text + answer tokens, labels -100
everywhere but the answer tokens (the model's own shifted cross-entropy over the full vocabulary at
every position: what a user gets).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchmarks.common import FlopModel, flop_model, interleave, median, median_dict, now, peak, sync
from tpv_core.backbones import Backbone, attention
from tpv_core.prompts import Origin, make_origin
from tpv_core.tasks import TaskSpec, get_task, load_split
from tpv_core.training import TrainConfig, tune_prompt

WARMUP_RATIO = 0.06
WEIGHT_DECAY = 1e-5
MAX_GRAD_NORM = 1.0
MAX_LENGTH = 256


@dataclass
class TrainCase:
    """One backbone + task + budget; ``rows``: the training split every contender draws from."""

    bb: Backbone
    task: TaskSpec
    origin: Origin
    rows: list[dict]
    batch_size: int
    steps: int
    lr: float

    @property
    def L(self) -> int:
        return self.origin.length


def _model_folder(bb: Backbone) -> str:
    return str(getattr(bb.model, "name_or_path", "") or bb.model.config._name_or_path)


# ---- ours -----------------------------------------------------------------------------------------
def run_ours(case: TrainCase, bb: Backbone | None = None, label: str = "ours", **overrides: Any) -> dict[str, Any]:
    """``tune_prompt`` over the whole split; ``overrides``: ``TrainConfig`` fields (the ablation's
    ``group_by_length=False``)."""
    bb = bb or case.bb
    log: list[tuple[int, int, int, list[int]]] = []
    inner = bb.collate

    def counting(ids, *a, **k):
        out = inner(ids, *a, **k)
        log.append((len(ids), int(out.lengths.sum()), int(out.input_ids.shape[1]), out.lengths.tolist()))
        return out

    stamps: list[float] = []
    cfg = TrainConfig(steps=case.steps, batch_size=case.batch_size, lr=case.lr, weight_decay=WEIGHT_DECAY,
                      warmup_ratio=WARMUP_RATIO, max_grad_norm=MAX_GRAD_NORM, eval_every=0, max_length=MAX_LENGTH,
                      data_seed=0, **overrides)
    bb.collate = counting  # instance attribute: instruments this run only
    try:
        sync(bb.device)
        t0 = now()
        res = tune_prompt(bb, case.task, case.origin, cfg, progress=lambda p: stamps.append(now()),
                          train_rows=case.rows)
        sync(bb.device)
        t1 = now()
    finally:
        del bb.collate
    out = _summary(label, case, t0, t1, stamps, log)
    out["final_loss"] = float(res.history["loss"].dropna().iloc[-1]) if len(res.history) else None
    out["prompt"] = res.prompt
    return out


def _summary(name: str, case: TrainCase, t0: float, t1: float, stamps: list[float],
             log: list[tuple[int, int, int, list[int]]]) -> dict[str, Any]:
    """Throughput over the whole call (setup included) and over steps 2..N (steady state)."""
    n_steps = len(stamps)
    rows = sum(x[0] for x in log[:n_steps])
    toks = sum(x[1] for x in log[:n_steps]) + rows * case.L
    padded = sum(x[0] * x[2] for x in log[:n_steps]) + rows * case.L
    steady_rows = sum(x[0] for x in log[1:n_steps])
    steady_toks = sum(x[1] for x in log[1:n_steps]) + steady_rows * case.L
    steady_lens = [case.L + n for x in log[1:n_steps] for n in x[3]]
    steady_s = stamps[-1] - stamps[0] if n_steps > 1 else float("nan")
    step_times = [b - a for a, b in zip(stamps, stamps[1:])]
    return {
        "contender": name, "steps": n_steps, "rows": rows, "tokens": toks, "padded_tokens": padded,
        "e2e_s": t1 - t0, "examples_per_s_e2e": rows / (t1 - t0), "tokens_per_s_e2e": toks / (t1 - t0),
        "examples_per_s": steady_rows / steady_s, "tokens_per_s": steady_toks / steady_s,
        "step_s": median(step_times), "steady_s": steady_s, "steady_rows": steady_rows,
        "steady_tokens": steady_toks, "seq_lens_steady": steady_lens,
        "padding_fraction": 1 - toks / padded if padded else 0.0,
    }


# ---- PEFT + Trainer -------------------------------------------------------------------------------
def _peft_model(case: TrainCase, attn: str | None = None):
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM

    folder = _model_folder(case.bb)
    extra = {"attn_implementation": attn} if attn else {}
    if case.bb.family == "encoder":
        base = AutoModel.from_pretrained(folder, dtype=torch.float32, **extra)
        task_type = TaskType.FEATURE_EXTRACTION
    elif case.bb.family == "decoder":
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
        task_type = TaskType.CAUSAL_LM
    else:
        raise ValueError(f"no PEFT comparison for family {case.bb.family}")
    cfg = PromptTuningConfig(task_type=task_type, num_virtual_tokens=case.L)
    model = get_peft_model(base, cfg)
    return model.to(case.bb.device)


def _reset_prompt(model, origin: Origin) -> None:
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.copy_(origin.require_tensor())


def _peft_rows(case: TrainCase) -> list[dict[str, Any]]:
    """Trainer features of the whole split, tokenized here (inside the timed call, as a user's script does)."""
    bb = case.bb
    feats = []
    ids_all = bb.tokenize([case.task.format(r, bb.family) for r in case.rows])
    answers = bb.answer_tokens(case.task.label_set()) if bb.family == "decoder" else None
    for ids, row in zip(ids_all, case.rows):
        tgt = case.task.label_of(row)
        ids = list(ids)[:MAX_LENGTH] if bb.family == "encoder" else list(ids)[-MAX_LENGTH:]
        if bb.family == "encoder":
            feats.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(tgt), "_n": len(ids)})
        else:
            ans = list(answers[tgt])
            feats.append({"input_ids": ids + ans, "attention_mask": [1] * (len(ids) + len(ans)),
                          "labels": [-100] * len(ids) + ans, "_n": len(ids)})
    return feats


def _make_trainer(case: TrainCase, model, best: bool, desc: torch.Tensor | None, temperature: float):
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    bb = case.bb
    tok = bb.tokenizer
    if tok.pad_token is None:  # what every user does for a causal LM without a pad token
        tok.pad_token = tok.eos_token
    inner = (DataCollatorWithPadding(tok) if bb.family == "encoder"
             else DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    log: list[tuple[int, int, int, list[int]]] = []

    def collate(feats):
        n = [f["_n"] for f in feats]
        out = inner([{k: v for k, v in f.items() if k != "_n"} for f in feats])
        log.append((len(feats), sum(n), int(out["input_ids"].shape[1]), n))
        return out

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            sync(bb.device)
            stamps.append(now())

    outdir = tempfile.mkdtemp(prefix="tpv-bench-trainer-")
    kwargs: dict[str, Any] = dict(
        output_dir=outdir, max_steps=case.steps, per_device_train_batch_size=case.batch_size,
        learning_rate=case.lr, weight_decay=WEIGHT_DECAY, warmup_steps=int(WARMUP_RATIO * case.steps),
        max_grad_norm=MAX_GRAD_NORM, lr_scheduler_type="linear", logging_strategy="no", save_strategy="no",
        report_to="none", disable_tqdm=True, seed=0, remove_unused_columns=False,
        use_cpu=bb.device.type == "cpu",
    )
    if best:
        kwargs.update(train_sampling_strategy="group_by_length", bf16=bb.compute_dtype == torch.bfloat16)
        if bb.device.type == "cpu":
            kwargs.update(dataloader_pin_memory=False)
    args = TrainingArguments(**kwargs)

    if bb.family == "encoder":
        L = case.L

        class CosineTrainer(Trainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                labels = inputs.pop("labels")
                out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
                hidden = out.last_hidden_state
                mask = inputs["attention_mask"]
                mask = torch.cat([torch.ones(mask.shape[0], L, dtype=mask.dtype, device=mask.device), mask], 1)
                m = mask.to(torch.float32).unsqueeze(-1)
                pooled = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1.0)
                logits = F.normalize(pooled, dim=-1) @ desc.T / temperature
                loss = F.cross_entropy(logits, labels)
                return (loss, out) if return_outputs else loss

        cls = CosineTrainer
    else:
        cls = Trainer
    trainer = cls(model=model, args=args, train_dataset=_peft_rows(case), data_collator=collate,
                  callbacks=[Stamp()])
    return trainer, stamps, log


def run_peft(case: TrainCase, model, best: bool, label: str) -> dict[str, Any]:
    bb = case.bb
    desc = bb.description_embeddings(case.task.label_set()) if bb.family == "encoder" else None
    temperature = getattr(bb, "temperature", 0.05)
    _reset_prompt(model, case.origin)
    sync(bb.device)
    t0 = now()
    trainer, stamps, log = _make_trainer(case, model, best, desc, temperature)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # Trainer prints its metrics dict
        warnings.simplefilter("ignore", FutureWarning)
        out = trainer.train()
    sync(bb.device)
    t1 = now()
    # undo accelerate's preparation (autocast wrapper on model.forward + the "prepared" flag, which would
    # make the next Trainer skip wrapping) so every run starts from a clean model, as in a fresh script
    if "_original_forward" in model.__dict__:
        model.forward = model.__dict__.pop("_original_forward")
    model.__dict__.pop("_is_accelerate_prepared", None)
    res = _summary(label, case, t0, t1, stamps, log)
    res["final_loss"] = float(out.training_loss) if out is not None else None
    return res


# ---- the benchmark --------------------------------------------------------------------------------
def make_case(bb: Backbone, task_name: str, steps: int, batch_size: int, L: int = 20, lr: float = 0.05,
              seed: int = 0) -> TrainCase:
    task = get_task(task_name)
    return TrainCase(bb, task, make_origin(bb, seed=seed, length=L), load_split(task, "train"), batch_size, steps, lr)


def answer_length(bb: Backbone, task: TaskSpec) -> float:
    """Mean verbaliser length in tokens (decoder), 0 for encoders (see ``mfu``)."""
    if bb.family != "decoder":
        return 0.0
    answers = bb.answer_tokens(task.label_set())
    return sum(map(len, answers)) / len(answers)


def mfu(fm: FlopModel, res: dict[str, Any], pk: dict[str, Any], answer_len: float) -> dict[str, Any]:
    """MFU of a run's steady-state steps: model FLOPs of steps 2..N over their time, against the matmul
    peak of the precision the backbone runs in (``common.peak``). ``answer_len``: mean verbaliser length
    in tokens (decoder: all but the last are fed, each is scored), 0 for encoders."""
    lens = [t + max(0.0, answer_len - 1) for t in res["seq_lens_steady"]]
    flops = fm.train_flops(lens, head_tokens=round(answer_len * len(lens)))
    achieved = flops / res["steady_s"] / 1e9
    return {"model_gflop_per_step": flops / max(1, res["steps"] - 1) / 1e9, "achieved_gflops": achieved,
            "precision": pk["precision"], "peak_gflops": pk["peak_gflops"], "peak_fp32_gflops": pk["fp32_gflops"],
            "peak_bf16_gflops": pk["bf16_gflops"], "mfu": achieved / pk["peak_gflops"],
            "mfu_fp32": achieved / pk["fp32_gflops"]}


def raw(runs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Per-round results for the JSON file, without tensors and per-row lengths."""
    return {k: [{kk: vv for kk, vv in r.items() if kk not in ("prompt", "seq_lens_steady")} for r in v]
            for k, v in runs.items()}


PER_CONTENDER = ("examples_per_s", "tokens_per_s", "examples_per_s_e2e", "tokens_per_s_e2e", "step_s", "e2e_s",
                 "padding_fraction", "final_loss")


def bench_train(bbs: dict[str, Backbone], *, task_name: str, steps: int, rounds: dict[str, int],
                batch_size: int = 8, L: int = 20, lr: float = 0.05, log: Callable[[str], None] = print,
                keep: dict | None = None, warm: bool = True, peft_eager: bool = False) -> dict[str, Any]:
    """``rounds``: per model. ``peft_eager``: add ``peft-best-eager`` where our backbone runs eager attention."""
    results: dict[str, Any] = {}
    for name, bb in bbs.items():
        n_rounds = rounds[name]
        case = make_case(bb, task_name, steps, batch_size, L, lr)
        attn = str(getattr(bb.model.config, "_attn_implementation", None))
        log(f"  {name}: {steps} steps of B={batch_size} from {len(case.rows)} rows of {task_name}, L={L}, "
            f"{n_rounds} round(s), precision {bb.compute_dtype}, attention {attn}")
        if bb.family == "encoder":
            bb.description_embeddings(case.task.label_set())  # cached once, as in any real run (PEFT gets it free)
        answer_len = answer_length(bb, case.task)
        fm = flop_model(bb.model)
        peft = {"peft-default": (_peft_model(case), False), "peft-best": (_peft_model(case), True)}
        if peft_eager and attn in ("eager", attention.NAME):
            peft["peft-best-eager"] = (_peft_model(case, attn="eager"), True)
        if warm:  # untimed: first-call costs
            short = dataclasses.replace(case, steps=min(steps, 2))
            run_ours(short)
            for label, (model, best) in peft.items():
                run_peft(short, model, best, label)
        contenders: dict[str, Callable[[], Any]] = {"ours": lambda: run_ours(case)}
        for label, (model, best) in peft.items():
            contenders[label] = lambda model=model, best=best, label=label: run_peft(case, model, best, label)
        contenders["peak"] = lambda: peak(bb)
        runs = interleave(contenders, n_rounds, log=log)
        per = {k: {m: median([r[m] for r in runs[k]]) for m in PER_CONTENDER} for k in contenders if k != "peak"}
        ratios = {k: {m: median([o[m] / p[m] for o, p in zip(runs["ours"], runs[k])])
                      for m in ("tokens_per_s", "tokens_per_s_e2e")} for k in peft}
        mfus = [mfu(fm, o, pk, answer_len) for o, pk in zip(runs["ours"], runs["peak"])]
        results[name] = {
            "task": task_name, "split_rows": len(case.rows), "batch_size": batch_size, "prompt_length": L,
            "steps": steps, "rounds": n_rounds, "precision_ours": str(bb.compute_dtype), "attention_ours": attn,
            "per_contender": per, "ratios": ratios, "mfu": {**median_dict(mfus), "rounds": mfus},
            "flop_model": {"n_matmul_params": fm.n_matmul, "n_layers": fm.n_layers, "d_attn": fm.d_attn,
                           "formula": "sum_rows 4*N*T + 12*n_layers*d_attn*T^2 (+4*V*d per scored answer token)"},
            "peft_settings": {
                "peft-default": "Trainer defaults (fp32, adamw_torch_fused, random sampler, num_workers=0, "
                                "pin_memory=True)",
                "peft-best": f"train_sampling_strategy='group_by_length', bf16={bb.compute_dtype == torch.bfloat16} "
                             "(as our precision 'auto'), dataloader_pin_memory=False (CPU), num_workers=0",
                "peft-best-eager": "peft-best on a model loaded with attn_implementation='eager'",
            },
            "raw": {**raw({k: v for k, v in runs.items() if k != "peak"}), "peak": runs["peak"]},
        }
        if keep is not None:
            keep[name] = {"bb": bb, "prompt": runs["ours"][-1]["prompt"]}
        del peft, contenders
        m = results[name]["mfu"]
        log(f"  {name}: ours {per['ours']['tokens_per_s']:.0f} tokens/s; x{ratios['peft-default']['tokens_per_s']:.2f} "
            f"vs PEFT default, x{ratios['peft-best']['tokens_per_s']:.2f} vs PEFT best; MFU {m['mfu']:.1%} of the "
            f"{m['precision']} peak ({m['peak_gflops']:.0f} GFLOP/s)")
    return results
