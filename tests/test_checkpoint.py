"""Training checkpoints: a run killed (SIGKILL) right after a checkpoint resumes and ends exactly where an
unbroken run with the same seed ends; `tpv train --resume` on a finished prompt changes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from tpv_core.checkpoint import CheckpointError, CheckpointPolicy, TrainState, checkpoint_path
from tpv_core.prompts import make_origin
from tpv_core.tasks import get_task
from tpv_core.training import TrainConfig, tune_prompt

TASK = "sentences_yelp"
CFG = dict(steps=8, batch_size=8, eval_every=3, eval_limit=16)
KILL_AT = 4  # checkpoints at steps 2, 4, 6; validation at 3, 6, 8: the best prompt so far is in the checkpoint


def test_killed_run_resumes_to_the_same_result(tmp_path, minilm):
    ckpt = tmp_path / "store" / "minilm-l6" / TASK / ".vocab5000-s0-L4.ckpt"
    script = textwrap.dedent(f"""
        import time
        from tpv_core.backbones import load_backbone
        from tpv_core.checkpoint import CheckpointPolicy
        from tpv_core.prompts import make_origin
        from tpv_core.tasks import get_task
        from tpv_core.training import TrainConfig, tune_prompt

        real_save = CheckpointPolicy.save

        def save(self, state, identity):
            path = real_save(self, state, identity)
            print("checkpoint", state.step, flush=True)
            if state.step >= {KILL_AT}:
                time.sleep(600)  # killed here
            return path

        CheckpointPolicy.save = save
        bb = load_backbone("minilm-l6", device="cpu")
        origin = make_origin(bb, seed=0, length=4)
        tune_prompt(bb, get_task({TASK!r}), origin, TrainConfig(**{CFG!r}),
                    checkpoint=CheckpointPolicy({str(ckpt)!r}, every=2))
        print("finished", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == f"checkpoint {KILL_AT}":
                break
        assert lines[-1] == f"checkpoint {KILL_AT}", lines
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert ckpt.is_file()
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no half-written file

    origin = make_origin(minilm, seed=0, length=4)
    task = get_task(TASK)
    policy = CheckpointPolicy(ckpt, every=2, resume=True)
    resumed = tune_prompt(minilm, task, origin, TrainConfig(**CFG), checkpoint=policy)
    unbroken = tune_prompt(minilm, task, origin, TrainConfig(**CFG))
    assert policy.saved_steps == [6]  # it continued from step 4, not from 0
    assert resumed.prompt.metadata["steps"] == 8 and resumed.best_step == unbroken.best_step
    # same batches, same optimizer state, same arithmetic: equal to float32 rounding (measured: identical)
    assert torch.allclose(resumed.prompt.tensor, unbroken.prompt.tensor, rtol=0, atol=1e-6)
    assert resumed.prompt.metrics == pytest.approx(unbroken.prompt.metrics, abs=1e-6)
    assert resumed.history["loss"].tolist()[1:] == pytest.approx(unbroken.history["loss"].tolist()[1:], abs=1e-5)
    print(f"\nmax |resumed - unbroken| = {float((resumed.prompt.tensor - unbroken.prompt.tensor).abs().max()):.3g}")


def test_checkpoint_of_another_run_is_refused_or_ignored(tmp_path):
    path = tmp_path / ".x.ckpt"
    p = torch.zeros(2, 3)
    CheckpointPolicy(path, every=1).save(TrainState(1, p, p, 0.5, 1, [{"step": 1, "loss": 0.3}], {"state": {},
                                                                                                   "param_groups": []}),
                                         {"task": "a", "config": {"lr": 0.1}})
    with pytest.raises(CheckpointError, match="different run.*config"):
        CheckpointPolicy(path, every=1, resume=True).restore({"task": "a", "config": {"lr": 0.2}})
    assert CheckpointPolicy(path, every=1, resume=True, discard_mismatch=True).restore({"task": "b"}) is None
    state = CheckpointPolicy(path, every=1, resume=True).restore({"task": "a", "config": {"lr": 0.1}})
    assert state.step == 1 and state.history == [{"step": 1, "loss": 0.3}]
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        CheckpointPolicy(path, every=1, resume=True).restore({})
    with pytest.raises(ValueError, match="interval"):
        CheckpointPolicy(path, every=0)


def test_cli_resume_on_a_finished_prompt_is_a_no_op(tmp_path, minilm, monkeypatch, capsys):
    from tpv_core.cli import main
    from tpv_core.cli import train_cmd

    monkeypatch.setattr(train_cmd, "load_backbone_for_cli", lambda args: minilm)
    store = tmp_path / "zoo"
    argv = ["train", "--backbone", "minilm-l6", "--task", TASK, "--length", "4", "--steps", "4", "--eval-limit", "8",
            "--batch-size", "4", "--store", str(store), "--checkpoint-every", "2"]
    assert main(argv) == 0
    path = store / "minilm-l6" / TASK / "vocab5000-s0-L4.safetensors"
    before = path.read_bytes()
    assert not checkpoint_path(path).exists()  # removed once the prompt is stored
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert "finished (4 of 4 steps)" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert main(argv[:-4] + ["--steps", "6", "--store", str(store), "--resume"]) == 0  # more steps: continues
    from tpv_core.store import load_prompt

    assert load_prompt(path).metadata["steps"] == 6


def test_cli_resume_leaves_a_prompt_that_stopped_early(tmp_path, minilm, monkeypatch, capsys):
    """A prompt that stopped under --patience is finished: --resume must not continue it to the step cap
    (that would be another recipe) and must not touch the file."""
    from tpv_core.cli import main
    from tpv_core.cli import train_cmd

    monkeypatch.setattr(train_cmd, "load_backbone_for_cli", lambda args: minilm)
    store = tmp_path / "zoo"
    # lr 1e-12 leaves the prompt where it starts: no validation beats step 0's, so patience 1 stops at step 2
    argv = ["train", "--backbone", "minilm-l6", "--task", TASK, "--length", "4", "--steps", "20", "--eval-limit", "8",
            "--batch-size", "4", "--eval-every", "2", "--lr", "1e-12", "--patience", "1", "--store", str(store)]
    assert main(argv) == 0
    path = store / "minilm-l6" / TASK / "vocab5000-s0-L4.safetensors"
    from tpv_core.store import load_prompt

    assert load_prompt(path).metadata["stopped_early"] and load_prompt(path).metadata["steps"] == 2
    before = path.read_bytes()
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert "stopped early at step 2" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_a_cancelled_app_job_continues_from_its_checkpoint(minilm, tmp_path, monkeypatch):
    import time

    from tpv_core.app.job_bodies import submit_training
    from tpv_core.app.jobs import CANCELLED, DONE, JobQueue
    from tpv_core.store import PromptStore
    from tpv_core.workflows.train import TrainRequest

    restored: list = []
    real_restore = CheckpointPolicy.restore

    def spy(self, identity):
        state = real_restore(self, identity)
        restored.append(None if state is None else state.step)
        return state

    monkeypatch.setattr(CheckpointPolicy, "restore", spy)
    cfg = TrainConfig(steps=60, batch_size=4, eval_every=20, eval_limit=8)
    request = TrainRequest("minilm-l6", (TASK,), (0,), str(tmp_path), cfg, length=4, checkpoint_every=2)
    ckpt = checkpoint_path(PromptStore(tmp_path).path_for("minilm-l6", TASK, "vocab5000-s0-L4"))
    q = JobQueue()
    loader = lambda name: minilm  # noqa: E731
    try:
        job = submit_training(q, request, loader)
        t0 = time.monotonic()
        while q.get(job).step < 7 and time.monotonic() - t0 < 60:
            time.sleep(0.02)
        assert q.cancel(job) and q.wait(job, timeout=60).state == CANCELLED
        assert ckpt.is_file()  # kept, so the job can continue
        first = q.get(job).step
        again = q.wait(submit_training(q, request, loader), timeout=120)
        assert again.state == DONE, again.error
    finally:
        q.shutdown()
    assert not ckpt.exists()  # removed once the prompt is stored
    stored = PromptStore(tmp_path).load("minilm-l6", TASK, "vocab5000-s0-L4")
    unbroken = tune_prompt(minilm, get_task(TASK), make_origin(minilm, seed=0, length=4), cfg)
    assert first < 60 and stored.metadata["steps"] == 60
    assert restored[0] is None and restored[1] >= 2 and restored[1] % 2 == 0  # the second job started mid-way
    assert torch.allclose(stored.tensor, unbroken.prompt.tensor, rtol=0, atol=1e-6)


def test_tpv_train_killed_mid_run_resumes_from_its_checkpoint(tmp_path, minilm, monkeypatch, capsys):
    """The command itself: `tpv train` killed (SIGKILL) once a checkpoint is on disk; `tpv train --resume`
    continues it and stores the prompt an unbroken `tpv train` stores."""
    import time
    from pathlib import Path

    from tpv_core.cli import main, train_cmd
    from tpv_core.store import PromptStore

    root = Path(__file__).resolve().parent.parent
    killed, unbroken = tmp_path / "killed", tmp_path / "unbroken"
    args = ["train", "--backbone", "minilm-l6", "--task", TASK, "--length", "4", "--steps", "40", "--batch-size", "4",
            "--eval-every", "10", "--eval-limit", "8", "--checkpoint-every", "2"]
    ckpt = checkpoint_path(PromptStore(killed).path_for("minilm-l6", TASK, "vocab5000-s0-L4"))
    proc = subprocess.Popen([sys.executable, "-m", "tpv_core", *args, "--store", str(killed)], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while not ckpt.exists() and proc.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert ckpt.exists(), "the run ended before its first checkpoint"
    assert not (killed / "minilm-l6" / TASK / "vocab5000-s0-L4.safetensors").exists()

    monkeypatch.setattr(train_cmd, "load_backbone_for_cli", lambda a: minilm)
    capsys.readouterr()
    assert main([*args, "--store", str(killed), "--resume"]) == 0
    assert f"continue {TASK}/vocab5000-s0-L4 from the checkpoint" in capsys.readouterr().err
    assert not ckpt.exists()
    assert main([*args, "--store", str(unbroken)]) == 0
    a = PromptStore(killed).load("minilm-l6", TASK, "vocab5000-s0-L4")
    b = PromptStore(unbroken).load("minilm-l6", TASK, "vocab5000-s0-L4")
    assert a.metadata["steps"] == b.metadata["steps"] == 40
    assert torch.allclose(a.tensor, b.tensor, rtol=0, atol=1e-6) and a.metrics == pytest.approx(b.metrics, abs=1e-6)
