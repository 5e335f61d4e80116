"""Run the benchmarks: ``python -m benchmarks.run [--quick | --smoke]``.

Writes ``benchmarks/results/latest.json`` (+ a timestamped copy) and prints the tables; a full run
also rewrites the results block of ``benchmarks/README.md``. ``--smoke`` (seconds, 2 steps each,
tiny batches) only checks that every path runs; it writes ``results/smoke.json``.

Sections: latency (first, so its first call is really the first), train (+ MFU), eval, ablation,
scaling, threads. ``--only train eval`` runs a subset.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Before torch loads: tpv_core sets OMP_WAIT_POLICY=PASSIVE (tpv_core/env.py; the `threads` section measures
# why). Every contender in this process runs under the same policy; OMP_WAIT_POLICY=ACTIVE to override.
import tpv_core  # noqa: E402,F401

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
SECTIONS = ("latency", "train", "eval", "ablation", "scaling", "threads")
MODELS = ("minilm-l6", "smollm2-135m")

# per mode: every size knob in one place; train/ablation rounds per model (MiniLM's runs take seconds,
# so more rounds cost little and steady its medians on a shared machine)
PROFILES = {
    "smoke": dict(train_steps=2, train_rounds=1, train_batch=2, train_warm=False, eval_rows=4, eval_rounds=1,
                  eval_new_tokens=2, eval_prompts=("none",), latency_rounds=1,
                  latency_full={"minilm-l6": 4, "smollm2-135m": 4}, latency_split=4, ablation_steps=2,
                  ablation_rounds=1, ablation_batch=2, ablation_eval_batch=4, scaling_rounds=1, scaling_batch=1,
                  scaling_L=(10, 20), scaling_n=(32, 64), threads_rounds=0,
                  sections=("latency", "train", "eval", "ablation", "scaling")),
    "quick": dict(train_steps=6, train_rounds={"minilm-l6": 3, "smollm2-135m": 1}, train_batch=8, train_warm=True,
                  eval_rows=32, eval_rounds=1, eval_new_tokens=8, eval_prompts=("none",), latency_rounds=1,
                  latency_full={"minilm-l6": 128, "smollm2-135m": 32}, ablation_steps=6, ablation_rounds=1,
                  ablation_batch=8, scaling_rounds=1, scaling_batch=4, threads_rounds=0,
                  sections=("latency", "train", "eval", "scaling")),
    "full": dict(train_steps=12, train_rounds={"minilm-l6": 7, "smollm2-135m": 3}, train_batch=8, train_warm=True,
                 peft_eager=True, eval_rows=64, eval_rounds=2, eval_new_tokens=8, eval_prompts=("tuned", "none"),
                 latency_rounds=2, latency_full={"minilm-l6": None, "smollm2-135m": None}, ablation_steps=12,
                 ablation_rounds={"minilm-l6": 5, "smollm2-135m": 2}, ablation_batch=8, scaling_rounds=2,
                 scaling_batch=8, threads_rounds=2, sections=SECTIONS),
}


def per_model(v: int | dict[str, int]) -> dict[str, int]:
    return v if isinstance(v, dict) else {m: v for m in MODELS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller budgets (< 10 min on a 2-core CPU)")
    mode.add_argument("--smoke", action="store_true", help="seconds: 2 steps each, checks every path runs")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--task", default="sst2", help="task for training/eval/latency (default sst2)")
    ap.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md (full runs)")
    ap.add_argument("--readme", action="store_true", help="rewrite benchmarks/README.md even for --quick")
    args = ap.parse_args(argv)
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    prof = PROFILES[mode_name]
    sections = [s for s in SECTIONS if s in (args.only or prof["sections"])]

    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import torch  # noqa: F401  (after the OpenMP policy is set)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from benchmarks import report
    from benchmarks.common import load_average, machine_info
    from tpv_core.backbones import load_backbone

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)

    cmd = "python -m benchmarks.run" + (f" --{mode_name}" if mode_name != "full" else "") + (
        " " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]) if a not in
                       ("--quick", "--smoke")) if (argv if argv is not None else sys.argv[1:]) else "")
    results: dict = {"mode": mode_name, "command": cmd.strip(), "started": dt.datetime.now().isoformat(timespec="seconds"),
                     "machine": machine_info(), "profile": {k: v for k, v in prof.items()}, "sections": sections}
    log(f"{mode_name} run: {', '.join(sections)} on {results['machine']['cpu']} "
        f"({results['machine']['cpus_usable']} cores, torch {results['machine']['torch']}, "
        f"{results['machine']['torch_threads']} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
        f"load {results['machine']['load_average_at_start']})")

    bbs = {m: load_backbone(m, device=args.device) for m in args.models}
    keep: dict = {}

    def save() -> None:
        results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        results["total_s"] = time.perf_counter() - t_start
        results["load_average_at_end"] = load_average()
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        text = json.dumps(results, indent=1, default=str)
        if mode_name == "smoke":
            (out / "smoke.json").write_text(text)
        else:
            (out / "latest.json").write_text(text)
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            (out / f"{stamp}-{mode_name}.json").write_text(text)

    if "latency" in sections:
        log("4. live combination latency")
        from benchmarks.bench_latency import bench_latency

        results["latency"] = bench_latency(bbs, task_name=args.task, rounds=prof["latency_rounds"],
                                           full_limit=prof["latency_full"], split_limit=prof.get("latency_split"),
                                           log=log)
        save()
    if "train" in sections:
        log("1+2. training throughput vs PEFT + Trainer, MFU")
        from benchmarks.bench_train import bench_train

        results["train"] = bench_train(bbs, task_name=args.task, steps=prof["train_steps"],
                                       rounds=per_model(prof["train_rounds"]), batch_size=prof["train_batch"], log=log,
                                       keep=keep, warm=prof["train_warm"], peft_eager=prof.get("peft_eager", False))
        gc.collect()
        save()
    if "eval" in sections and "smollm2-135m" in bbs:
        log("3. evaluation: rank classification vs generation (SmolLM2)")
        from benchmarks.bench_eval import bench_eval

        bb = bbs["smollm2-135m"]
        prompts = {}
        for p in prof["eval_prompts"]:
            if p == "none":
                prompts["none (zero-shot)"] = None
            elif "smollm2-135m" in keep:
                prompts[f"tuned ({prof['train_steps']} steps)"] = keep["smollm2-135m"]["prompt"].tensor
            else:
                from tpv_core.prompts import make_origin

                prompts["origin (untuned)"] = make_origin(bb, seed=0, length=20).require_tensor()
        results["eval"] = bench_eval(bb, prompts, task_name=args.task, n_rows=prof["eval_rows"],
                                     rounds=prof["eval_rounds"], max_new_tokens=prof["eval_new_tokens"], log=log)
        save()
    if "ablation" in sections:
        log("ablation: what each landed change is worth")
        from benchmarks.bench_ablation import bench_ablation

        results["ablation"] = bench_ablation(bbs, task_name=args.task, steps=prof["ablation_steps"],
                                             rounds=per_model(prof["ablation_rounds"]),
                                             batch_size=prof["ablation_batch"],
                                             eval_batch_size=prof.get("ablation_eval_batch", 32), device=args.device,
                                             log=log)
        gc.collect()
        save()
    if "scaling" in sections:
        log("5. scaling with prompt length and input length")
        from benchmarks.bench_scaling import INPUT_LENGTHS, PROMPT_LENGTHS, bench_scaling

        results["scaling"] = bench_scaling(bbs, rounds=prof["scaling_rounds"], batch=prof["scaling_batch"], log=log,
                                           prompt_lengths=prof.get("scaling_L", PROMPT_LENGTHS),
                                           input_lengths=prof.get("scaling_n", INPUT_LENGTHS))
        save()
    if "threads" in sections and prof["threads_rounds"]:
        log("OpenMP wait policy (child processes)")
        from benchmarks.bench_threads import bench_threads

        results["threads"] = bench_threads(list(bbs), rounds=prof["threads_rounds"], log=log)
        save()

    save()
    table = report.render(results)
    print("\n" + table)
    if (mode_name == "full" and not args.no_readme) or (args.readme and mode_name != "smoke"):
        report.update_readme(HERE / "README.md", table)
        log("README.md results block rewritten")
    log(f"done in {time.perf_counter() - t_start:.0f} s; results in {HERE / 'results'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
