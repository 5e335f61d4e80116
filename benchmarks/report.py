"""Markdown tables from a results dict (printed by ``run.py`` and written into README.md between markers)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _f(x: Any, spec: str = ".2f", suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:{spec}}{suffix}"


def _pct(x: Any) -> str:
    return _f(None if x is None else 100 * x, ".0f", " %")


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _rounds(section: dict[str, Any]) -> str:
    return ", ".join(f"{m} {r['rounds']}" for m, r in section.items())


def goals(res: dict[str, Any]) -> list[dict[str, Any]]:
    g: list[dict[str, Any]] = []
    tr = res.get("train", {})
    for m in ("minilm-l6", "smollm2-135m"):
        if m in tr:
            r = tr[m]["ratios"]
            v = r["peft-default"]["tokens_per_s"]
            g.append({"goal": f"training {m}: ours vs PEFT default (tokens/s)", "target": ">= 2.5x",
                      "value": v, "ok": v >= 2.5, "fmt": "x"})
            v = r["peft-best"]["tokens_per_s"]
            g.append({"goal": f"training {m}: ours vs PEFT best (tokens/s)", "target": "> 1x",
                      "value": v, "ok": v > 1.0, "fmt": "x"})
    if "smollm2-135m" in tr:
        mm = tr["smollm2-135m"]["mfu"]
        g.append({"goal": f"MFU of our training step, SmolLM2 (of measured {mm['precision']} peak)",
                  "target": ">= 50 %", "value": mm["mfu"], "ok": mm["mfu"] >= 0.5, "fmt": "%"})
    lat = res.get("latency", {})
    for m, lim in (("minilm-l6", 2.0), ("smollm2-135m", 5.0)):
        if m in lat:
            v = lat[m]["first_s"]["bs32"]
            g.append({"goal": f"first running estimate {m} (batch 32, warm)", "target": f"<= {lim:g} s",
                      "value": v, "ok": v <= lim, "fmt": "s"})
    return g


def _gv(x: Any, fmt: str) -> str:
    if fmt == "x":
        return _f(x, ".2f", "x")
    if fmt == "%":
        return _pct(x)
    return _f(x, ".2f", " s")


VARIANTS = {
    "current": "the code as it ships",
    "sdpa": "eager attention undone (SDPA)",
    "eager": "prototype: eager attention in this setting too",
    "ungrouped": "length grouping undone (random batches)",
    "sdpa+ungrouped": "both undone: the code before the changes",
    "bf16w": "prototype, not landed: bf16 Linear weights in the blocks",
}


def render(res: dict[str, Any]) -> str:
    parts: list[str] = []
    mi = res.get("machine", {})
    bf16 = mi.get("avx512_bf16") or mi.get("amx_bf16")
    parts.append(f"Run `{res.get('command', '')}` ({res.get('mode')}) on {res.get('finished', '')}: "
                 f"**{mi.get('cpu')}**, {mi.get('cpus_usable')} cores usable, native bf16 "
                 f"(AVX512-BF16/AMX) {'yes' if bf16 else 'no'}, torch {mi.get('torch')} "
                 f"({mi.get('torch_threads')} threads, OMP_WAIT_POLICY={mi.get('omp_wait_policy')}), "
                 f"transformers {mi.get('transformers')}, peft {mi.get('peft')}; load average at start "
                 f"{mi.get('load_average_at_start')}, at end {res.get('load_average_at_end')} (the machine is shared: "
                 f"read ratios, not absolute times). Total {res.get('total_s', 0):.0f} s.")
    gl = goals(res)
    if gl:
        parts.append("### Goals\n\n" + _table(
            ["goal", "target", "measured", "met?"],
            [[x["goal"], x["target"], _gv(x["value"], x["fmt"]), "yes" if x["ok"] else "**no**"] for x in gl]))
    tr = res.get("train", {})
    if tr:
        rows = []
        for m, r in tr.items():
            for c, p in r["per_contender"].items():
                rows.append([m, c, _f(p["examples_per_s"]), _f(p["tokens_per_s"], ".0f"), _f(p["step_s"], ".3f"),
                             _f(p["tokens_per_s_e2e"], ".0f"), _pct(p["padding_fraction"]), _f(p["final_loss"], ".3f"),
                             _f(r["ratios"].get(c, {}).get("tokens_per_s"), ".2f", "x")])
        first = next(iter(tr.values()))
        ran = "; ".join(f"{m}: {r['mfu']['precision']}, {r['attention_ours']} attention" for m, r in tr.items())
        parts.append(f"### 1. Training throughput ({first['task']}, B={first['batch_size']}, "
                     f"L={first['prompt_length']}, {first['steps']} steps drawn from the {first['split_rows']}-row "
                     f"training split, interleaved rounds: {_rounds(tr)}; medians)\n\n" + _table(
                         ["model", "contender", "examples/s", "tokens/s", "s/step", "tokens/s incl. setup",
                          "padding", "loss", "ours / contender (tokens/s)"], rows)
                     + "\n\nexamples/s and tokens/s: steps 2..N (steady state); tokens = soft prompt + real input "
                       "tokens (padding and answer tokens excluded, same definition for every contender). "
                       "\"incl. setup\": the whole call (tokenizing the split, Trainer/optimizer construction). Every "
                       "contender draws its batches from the whole split with its own sampler (ours and `peft-best` "
                       "length-grouped, `peft-default` random), so the rows differ and ratios are taken on tokens/s, "
                       f"as medians of per-round ratios. Our code ran {ran}.")
        rows = []
        for m, r in tr.items():
            mm = r["mfu"]
            rows.append([m, mm["precision"], _f(mm["model_gflop_per_step"], ".1f"), _f(mm["achieved_gflops"], ".1f"),
                         _f(mm["peak_fp32_gflops"], ".0f"), _f(mm["peak_bf16_gflops"], ".0f"), _pct(mm["mfu"])])
        parts.append("### 2. Model FLOP utilisation of our training step\n\n" + _table(
            ["model", "precision", "model GFLOP/step", "achieved GFLOP/s", "fp32 peak GFLOP/s", "bf16 peak GFLOP/s",
             "MFU (peak of the precision used)"], rows)
            + "\n\nModel FLOPs per step = sum over rows of 4·N·T + 12·n_layers·d_attn·T² (+ 4·V·d per scored answer "
              "token), T = soft prompt + real input tokens, N = weights of the Linear layers in the transformer "
              "blocks (MiniLM 10.6 M, SmolLM2 106.2 M; embeddings, LM head and BERT's unused pooler excluded). "
              "4N, not 6N: the frozen model's backward computes activation gradients (as large as the forward) "
              "but no weight gradients. Peaks: best of 3 products of 2048x2048 matrices in the same round, "
              "torch's default thread count; the bf16 peak only where the code runs bf16 (without native bf16 a "
              "bf16 product runs at a fraction of a GFLOP/s).")
    ev = res.get("eval")
    if ev:
        rows = []
        for pn, r in ev["by_prompt"].items():
            rows.append([pn, _f(r["rank_examples_per_s"]), _f(r["generate_examples_per_s"]),
                         _f(r["rank_vs_generate"], ".2f", "x"), f"{r['generated_valid']}/{ev['rows']}",
                         _pct(r["agreement_on_valid"]), f"{r.get('first_line_valid')}/{ev['rows']}",
                         _pct(r.get("first_line_agreement")),
                         _f(next(iter(r["rank_metrics"].values()), None), ".3f"),
                         _f(next(iter(r["generate_metrics"].values()), None), ".3f")])
        parts.append(f"### 3. Evaluation: rank classification vs generation + exact match ({ev['model']}, "
                     f"{ev['task']} validation, {ev['rows']} rows, batch {ev['batch_size']}, "
                     f"max_new_tokens {ev['max_new_tokens']})\n\n" + _table(
                         ["prompt", "rank examples/s", "generate examples/s", "rank / generate",
                          "generations that are a label", "agreement (on those)",
                          "first line is a label", "agreement (first line)", "rank accuracy",
                          "generate accuracy"], rows)
                     + "\n\nAgreement: share of rows where rank classification and generation predict the same "
                       "label, among the rows whose generated text is a label. \"First line\": the generated text cut "
                       "at its first newline (SmolLM2 goes on after the label, e.g. `negative\\n\\nThe answer is: "
                       "negative`, which whole-string exact match counts as wrong).")
    lat = res.get("latency", {})
    if lat:
        rows = []
        for m, r in lat.items():
            fs = r["first_s"]
            rows.append([m, _f(r["cold_first_s"], ".2f", " s"), _f(fs.get("bs32"), ".2f", " s"),
                         _f(fs.get("bs16"), ".2f", " s"), _f(fs.get("bs8"), ".2f", " s"),
                         f"{_f(r['full_s'], '.1f', ' s')} ({r['rows_full']} rows)"])
        parts.append("### 4. Live combination latency (new weights -> running estimate, sst2 validation prepared once)"
                     "\n\n" + _table(["model", "first estimate, first call", "first estimate (batch 32)",
                                       "batch 16 (the app)", "batch 8", "full split (batch 32)"], rows))
    sc = res.get("scaling", {})
    if sc:
        rows = []
        for m, r in sc.items():
            for x in sorted(r["rows"], key=lambda x: (x["input_tokens"] != 64, x["prompt_length"], x["input_tokens"])):
                rows.append([m, str(x["prompt_length"]), str(x["input_tokens"]), _f(x["step_s"], ".3f"),
                             _f(x["time_vs_L20_n64"], ".2f", "x"), _f(x["flops_vs_L20_n64"], ".2f", "x"),
                             _f(x["tokens_per_s"], ".0f"), _pct(x["mfu"])])
        first = next(iter(sc.values()))
        parts.append(f"### 5. Scaling of the training step (B={first['batch']}, rows of exactly n input tokens)\n\n"
                     + _table(["model", "prompt L", "input n", "s/step", "time vs L=20,n=64",
                               "model FLOPs vs L=20,n=64", "tokens/s", f"MFU ({first['precision']} peak)"], rows))
    ab = res.get("ablation", {})
    if ab:
        rows = []
        for m, r in ab.items():
            for v, x in r["variants"].items():
                rows.append([m, v, VARIANTS.get(v, ""), _f(x["tokens_per_s"], ".0f"), _f(x["step_s"], ".3f"),
                             _pct(x["padding_fraction"]), _pct(x["mfu"]), _f(x["current_over_variant"], ".2f", "x"),
                             _f(x.get("eval_batch_s"), ".3f"), _f(x.get("eval_current_over_variant"), ".2f", "x"),
                             _pct(x.get("eval_pred_agreement"))])
        first = next(iter(ab.values()))
        parts.append(f"### Ablation: what each landed change is worth (training as in section 1, {first['steps']} "
                     f"steps of B={first['batch_size']}; eval: one batch of {first['eval_batch_size']}; interleaved "
                     f"rounds: {_rounds(ab)}; medians)"
                     "\n\n" + _table(
                         ["model", "variant", "what it is", "tokens/s", "s/step", "padding", "MFU",
                          "current / variant (tokens/s)", "eval s/batch", "current / variant (eval)",
                          "same predictions as current"], rows)
                     + "\n\ncurrent / variant > 1: the current code is that much faster (for an undone change: what "
                       "the change is worth); < 1: the variant would be faster. Eval columns only for variants with "
                       "their own backbone (grouping does not touch evaluation).")
    th = res.get("threads", {})
    if th:
        rows = [[m, _f(r["step_s"].get("spin (default)"), ".3f"), _f(r["step_s"].get("PASSIVE"), ".3f"),
                 _f(r.get("passive_speedup"), ".2f", "x")] for m, r in th.items()]
        parts.append("### OpenMP wait policy (child processes, A/B interleaved)\n\n" + _table(
            ["model", "s/step, libgomp default (spin)", "s/step, OMP_WAIT_POLICY=PASSIVE", "speed-up"], rows))
    return "\n\n".join(parts) + "\n"


def update_readme(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n## Latest results\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + START + "\n" + table + END + tail)
