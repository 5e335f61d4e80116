"""tpv grid: a 4-job plan of tiny models on local worker processes and on a local Ray."""

import os
from pathlib import Path

import pytest
import torch

from tpv_core.grid import LocalExecutor, PlanError, load_plan, parse_plan, run_grid
from tpv_core.store import PromptStore, load_prompt

PLAN = {
    "name": "tiny",
    "recipe": "demo",
    "train": {"backbones": ["test-tiny-t5"], "tasks": ["sentences_yelp", "sentences_imdb"], "origins": [0, 1],
              "overrides": {"steps": 3, "length": 4, "batch_size": 4, "eval_limit": 8}},
}


def _tensors(store):
    return {str(p.relative_to(store.root)): load_prompt(p).tensor for p in store.files()}


def test_plan_expands_and_rejects_bad_plans(tmp_path):
    plan = parse_plan(PLAN)
    assert [j.id for j in plan.jobs] == ["test-tiny-t5/sentences_yelp/s0", "test-tiny-t5/sentences_yelp/s1",
                                         "test-tiny-t5/sentences_imdb/s0", "test-tiny-t5/sentences_imdb/s1"]
    fs = parse_plan({**PLAN, "fewshot": {"backbones": ["test-tiny-t5"], "targets": ["sentences_amazon"],
                                         "sources": ["sentences_yelp", "sentences_imdb"], "k": [4, 8],
                                         "inits": ["random", "spot", "tpv"], "seeds": ["0-1"]}})
    assert len(fs.fewshot) == 2 * 4 * 2 and fs.fewshot[0].store_task == "sentences_amazon.k4.random"
    with pytest.raises(PlanError, match="unknown keys"):
        parse_plan({**PLAN, "trian": {}})
    with pytest.raises(PlanError, match="unknown fields"):
        parse_plan({**PLAN, "train": {**PLAN["train"], "overrides": {"learning_rate": 1}}})
    with pytest.raises(PlanError, match="task 'nosuchtask'"):
        parse_plan({**PLAN, "train": {**PLAN["train"], "tasks": ["nosuchtask"]}})
    with pytest.raises(PlanError, match="unknown recipe"):
        parse_plan({**PLAN, "recipe": "fast"})
    (tmp_path / "p.yaml").write_text("name: [unclosed\n")
    with pytest.raises(PlanError, match="not valid YAML"):
        load_plan(tmp_path / "p.yaml")


def test_demo_plan_in_docs_parses():
    plan = load_plan(Path(__file__).resolve().parents[1] / "docs" / "plans" / "demo.yaml")
    assert len(plan.train) == 4 and {j.backbone for j in plan.jobs} == {"minilm-l6"}
    paper = load_plan(Path(__file__).resolve().parents[1] / "docs" / "plans" / "paper.yaml")
    assert {j.recipe for j in paper.train} == {"paper"} and len(paper.train) == 6 * 3


@pytest.mark.slow
def test_grid_local_and_ray_store_the_same_prompts_retry_and_report(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    import grid_helpers

    plan = parse_plan(PLAN)
    with_fewshot = parse_plan({**PLAN, "fewshot": {
        "backbones": ["test-tiny-t5"], "targets": ["sentences_amazon"], "sources": ["sentences_yelp", "sentences_imdb"],
        "k": [4], "inits": ["random", "tpv"], "seeds": [0], "test_limit": 8,
        "overrides": {"steps": 2, "length": 4, "batch_size": 4, "eval_limit": 8}}})
    local = PromptStore(tmp_path / "local")
    ex = LocalExecutor(grid_helpers.run_job_with_test_models, workers=2)
    try:
        report = run_grid(with_fewshot, local, ex)
    finally:
        ex.close()
    assert report.ok and list(report.table["state"]) == ["done"] * 6
    assert report.table["val"].notna().all() and report.table["minutes"].ge(0).all()
    assert report.table["test"].iloc[4:].between(0, 1).all()  # few-shot jobs are scored on the test split
    stored = _tensors(local)
    assert len(stored) == 6
    meta = load_prompt(local.path_for("test-tiny-t5", "sentences_yelp", "vocab5000-s0-L4")).metadata
    assert meta["recipe"]["name"] == "demo" and meta["recipe"]["fields"]["steps"] == 3 and meta["grid"]["plan"] == "tiny"
    fs = load_prompt(local.path_for("test-tiny-t5", "sentences_amazon.k4.tpv", "vocab5000-s0-L4"))
    assert fs.metadata["fewshot"]["k"] == 4 and fs.metadata["training"]["train_rows"] == 4
    assert fs.metadata["training"]["init"] == "custom"  # started from P0 + tau_yelp + tau_imdb
    stored = {k: v for k, v in stored.items() if ".k4." not in k}

    idle = LocalExecutor(grid_helpers.run_job_with_test_models, workers=1)  # never given a job below
    again = run_grid(with_fewshot, local, idle)  # resumable: everything is stored
    assert list(again.table["state"]) == ["skipped"] * 6
    other_recipe = parse_plan({**PLAN, "train": {**PLAN["train"], "overrides": {**PLAN["train"]["overrides"],
                                                                                  "steps": 4}}})
    from tpv_core.grid import job_done

    assert all(job_done(local, j) is None for j in other_recipe.jobs)  # other recipe fields: not the same prompt
    patient = parse_plan({**PLAN, "train": {**PLAN["train"], "overrides": {**PLAN["train"]["overrides"],
                                                                             "patience": 2}}})
    assert all(job_done(local, j) is None for j in patient.jobs)  # early stopping is a recipe field too
    clash = run_grid(other_recipe, local, idle)  # ... and not replaced without force
    assert list(clash.table["state"]) == ["failed"] * 4 and all("--force" in e for e in clash.table["error"])
    idle.close()

    # Ray: one job fails once (retried, stored), one always fails (reported); the others are stored
    monkeypatch.setenv("TPV_TEST_FAIL_ONCE", "test-tiny-t5/sentences_yelp/s1")
    monkeypatch.setenv("TPV_TEST_FAIL_ALWAYS", "test-tiny-t5/sentences_imdb/s0")
    monkeypatch.setenv("TPV_TEST_MARKS", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(grid_helpers.__file__).parent),
                                                      os.environ.get("PYTHONPATH", "")]))
    from tpv_core.grid import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = PromptStore(tmp_path / "ray")
        rep = run_grid(plan, remote, RayExecutor(grid_helpers.flaky_run_job, num_cpus=1), retries=2)
    finally:
        ray.shutdown()
    states = dict(zip(rep.table["job"], rep.table["state"]))
    attempts = dict(zip(rep.table["job"], rep.table["attempts"]))
    assert states == {"test-tiny-t5/sentences_yelp/s0": "done", "test-tiny-t5/sentences_yelp/s1": "done",
                      "test-tiny-t5/sentences_imdb/s0": "failed", "test-tiny-t5/sentences_imdb/s1": "done"}
    assert attempts["test-tiny-t5/sentences_yelp/s1"] == 2 and attempts["test-tiny-t5/sentences_imdb/s0"] == 3
    assert rep.failed == [{"job": "test-tiny-t5/sentences_imdb/s0", "attempts": 3,
                           "error": "RuntimeError: this job always fails"}]
    got = _tensors(remote)
    assert len(got) == 3 and all(torch.equal(got[k], stored[k]) for k in got)  # same seeds, same tensors


def test_grid_command_dry_run_lists_jobs(tmp_path, capsys):
    import json

    import yaml

    from tpv_core.cli import main

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    assert main(["grid", str(plan), "--store", str(tmp_path / "store"), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [j["stored"] for j in out["jobs"]] == ["no"] * 4 and out["store"] == str(tmp_path / "store")
    plan.write_text("name: x\ntrain: {backbones: [test-tiny-t5], tasks: [nosuchtask], origins: [0]}\n")
    assert main(["grid", str(plan), "--dry-run"]) == 2
    assert "nosuchtask" in capsys.readouterr().err


def test_prompts_stored_before_a_recipe_field_existed_still_match():
    from tpv_core.grid.driver import _same_fields

    old = {"lr": 0.3, "steps": None}  # written by a library without `patience`
    assert _same_fields(old, {"lr": 0.3, "steps": None, "patience": None})
    assert not _same_fields(old, {"lr": 0.3, "steps": None, "patience": 3})
    assert not _same_fields({**old, "patience": 3}, {"lr": 0.3, "steps": None, "patience": None})
    assert not _same_fields(old, {"lr": 0.1, "steps": None, "patience": None})


@pytest.mark.parametrize("plan", sorted((Path(__file__).parent.parent / "docs" / "plans").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_the_documented_plans_parse(plan):
    parsed = load_plan(plan)  # task names, recipes, fields and backbones checked up front
    assert parsed.jobs
