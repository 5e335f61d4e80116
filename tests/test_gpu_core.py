"""The GPU-facing core, tested without a GPU: precision choice (mocked CUDA), the distributed set-up order
(mocked CUDA), the full train / evaluate / save path on PyTorch's ``lazy`` device (a non-CPU device that
fails like CUDA when a CPU tensor meets a device tensor), host syncs in the step loop, and data parallelism
with multi-token labels on 2 gloo processes."""

import socket
from unittest import mock

import pytest
import torch
import torch.multiprocessing as mp

from tpv_core import device as devmod
from tpv_core import distributed
from tpv_core.evaluation import evaluate, prepare_split
from tpv_core.prompts import make_origin
from tpv_core.tasks import get_task, load_split
from tpv_core.training import TrainConfig, tune_prompt

MULTI = "qnli"  # verbalisers of 2 and 5 tokens on the SmolLM2 tokenizer: ranks hold different token counts


# ---- precision -----------------------------------------------------------------------------------------
def _fake_gpus(capabilities):
    """Patch torch.cuda so that GPU i has compute capability capabilities[i] (current device 0)."""
    return mock.patch.multiple(torch.cuda, is_available=lambda: True, device_count=lambda: len(capabilities),
                               current_device=lambda: 0,
                               get_device_capability=lambda i=None: capabilities[0 if i is None else i])


def test_precision_plan_on_gpus_reads_the_backbones_own_device_and_native_bf16_only():
    f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
    with _fake_gpus([(7, 0), (9, 0)]), mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: True):
        # V100 (7.0) claims bf16 through emulation: auto must not take it, but fp16 with loss scaling
        v100 = devmod.plan_precision("cuda:0")
        assert (v100.weights, v100.compute, v100.loss_scaling) == (f16, f16, True)
        # H100 (9.0) as cuda:1 while the current device is the V100: the backbone's device decides
        h100 = devmod.plan_precision("cuda:1")
        assert (h100.weights, h100.compute, h100.loss_scaling) == (bf16, bf16, False)
        assert devmod.plan_precision("cuda:1", "fp32") == devmod.PrecisionPlan(f32, None)
        assert devmod.plan_precision("cuda:1", "fp16").loss_scaling
        assert devmod.plan_precision("cuda:0", "bf16").weights == bf16  # on request, with a warning
        assert devmod.default_batch_size("cuda:1") == 32


def test_precision_plan_on_cpus_keeps_fp32_weights():
    f32, bf16 = torch.float32, torch.bfloat16
    with mock.patch.object(devmod, "cpu_supports_bf16", lambda: True):
        assert devmod.plan_precision("cpu") == devmod.PrecisionPlan(f32, bf16)
    with mock.patch.object(devmod, "cpu_supports_bf16", lambda: False):
        assert devmod.plan_precision("cpu") == devmod.PrecisionPlan(f32, None)
        assert devmod.plan_precision("cpu", "bf16") == devmod.PrecisionPlan(f32, bf16)
    assert devmod.plan_precision("cpu", "fp32") == devmod.PrecisionPlan(f32, None)
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        devmod.plan_precision("cpu", "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        devmod.plan_precision("cpu", "half")
    assert devmod.default_batch_size("cpu") == 8
    assert not devmod.enable_tf32("cpu")


def test_low_precision_head_is_read_in_chunks_without_a_full_fp32_copy():
    from tpv_core.backbones import head as base

    torch.manual_seed(0)
    w = torch.randn(1000, 16).to(torch.bfloat16)
    h = torch.randn(5, 16, requires_grad=True)
    ref = h @ w.float().t()
    g = torch.randn(5, 1000)
    (ref_grad,) = torch.autograd.grad(ref, h, g)
    saved = []
    with mock.patch.object(base, "HEAD_CHUNK_ROWS", 128), \
            torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = base.fp32_linear(h, w)
    with mock.patch.object(base, "HEAD_CHUNK_ROWS", 128):
        (grad,) = torch.autograd.grad(out, h, g)
    assert out.dtype == torch.float32 and out.shape == (5, 1000)
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(grad, ref_grad, rtol=1e-5, atol=1e-4), \
        (grad - ref_grad).abs().max()
    # backward keeps the bf16 head itself, no fp32 copy of it or of its chunks
    assert not any(t.dtype == torch.float32 and t.shape[-1] == 16 and t.numel() >= 128 * 16 for t in saved)
    w32 = w.float()
    assert torch.equal(base.fp32_linear(h, w32), torch.nn.functional.linear(h, w32))


# ---- distributed set-up order (mocked CUDA) ------------------------------------------------------------
def test_setup_follows_local_rank_and_starts_the_group_before_the_model(monkeypatch):
    events = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    started = {"on": False}

    def init_process_group(backend=None, **kw):
        events.append(("init", backend, kw.get("device_id")))
        started["on"] = True

    fake = dict(is_initialized=lambda: started["on"], init_process_group=init_process_group,
                get_rank=lambda: 3, get_world_size=lambda: 4, get_backend=lambda: "nccl",
                barrier=lambda: events.append(("barrier",)),
                destroy_process_group=lambda: (events.append(("destroy",)), started.update(on=False)))
    with _fake_gpus([(9, 0)] * 4), mock.patch.multiple(torch.distributed, **fake), \
            mock.patch.object(torch.cuda, "set_device", lambda d: events.append(("set_device", torch.device(d)))):
        ctx = distributed.setup("auto")
        assert ctx.device == torch.device("cuda", 3) and ctx.rank == 3 and ctx.world_size == 4 and not ctx.is_main
        assert events == [("set_device", torch.device("cuda", 3)), ("init", "nccl", torch.device("cuda", 3))]
        with pytest.raises(ValueError, match="LOCAL_RANK"):
            distributed.rank_device("cuda:1", 3)
        with pytest.raises(ValueError, match="only 4 GPU"):
            distributed.rank_device("cuda", 4)

        # the CLI: set-up, then the model on this rank's GPU, then barrier + shutdown (even on an error)
        from tpv_core import cli

        events.clear()
        started["on"] = False

        def fake_load(name, device=None, precision="auto", notify=None):
            events.append(("load", device, started["on"]))
            raise ValueError("stop here")

        monkeypatch.setattr(distributed, "current", lambda: distributed.DistContext(3, 4, 3, torch.device("cuda", 3),
                                                                                  "nccl"))
        with mock.patch("tpv_core.backbones.load_backbone", fake_load):
            assert cli.main(["eval", "--backbone", "x", "--task", "sst2"]) == 2
    assert events == [("set_device", torch.device("cuda", 3)), ("init", "nccl", torch.device("cuda", 3)),
                      ("load", "cuda:3", True), ("barrier",), ("destroy",)]


def test_shard_bounds_cover_every_row_once():
    for n in (0, 1, 5, 9, 10):
        for world in (1, 2, 3):
            spans = [distributed.shard_bounds(n, r, world) for r in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


# ---- the lazy device ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lazy():
    ts_backend = pytest.importorskip("torch._lazy.ts_backend")
    ts_backend.init()
    return torch.device("lazy")


def _small(**kw):
    base = dict(steps=3, batch_size=4, eval_every=3, eval_limit=6, lr=0.1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("name", ["test-tiny-llama", "test-tiny-t5"])
def test_train_evaluate_save_on_the_lazy_device_match_cpu(lazy, name, tmp_path):
    from tpv_core.backbones import load_backbone
    from tpv_core.store import PromptStore

    task = get_task(MULTI)
    out = {}
    for dev in ("cpu", "lazy"):
        bb = load_backbone(name, device=dev, precision="fp32")
        assert bb.device.type == dev
        origin = make_origin(bb, seed=0, length=4)
        res = tune_prompt(bb, task, origin, _small())
        prepared = prepare_split(bb, task, "validation", limit=6)
        ev = evaluate(bb, task, res.prompt.tensor, prepared)
        path = PromptStore(tmp_path / dev).save(res.prompt)
        back = PromptStore(tmp_path / dev).load(name, task.name, origin.id)
        assert path.is_file() and torch.equal(back.tensor, res.prompt.tensor)
        out[dev] = (origin.tensor, res.prompt.tensor, res.history["loss"].dropna().tolist(), ev.predictions)
    assert torch.equal(out["cpu"][0], out["lazy"][0])  # the origin: rows gathered on the device
    assert torch.allclose(out["cpu"][1], out["lazy"][1], atol=1e-4)
    assert out["cpu"][2] == pytest.approx(out["lazy"][2], rel=1e-4)
    assert out["cpu"][3] == out["lazy"][3]


def _count_host_syncs(fn):
    """Calls that read a lazy tensor back to the host, by (function, file, line) of the first frame outside torch."""
    import collections
    import traceback

    from torch.overrides import TorchFunctionMode

    reads = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.__int__,
             torch.Tensor.__float__, torch.Tensor.nonzero, torch.Tensor.cpu}
    seen = collections.Counter()

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in reads and args and isinstance(args[0], torch.Tensor) and args[0].device.type == "lazy":
                frames = [f for f in traceback.extract_stack()[:-1] if "site-packages/torch/" not in f.filename]
                seen[(func.__name__, frames[-1].filename.rsplit("/", 2)[-1], frames[-1].lineno)] += 1
            return func(*args, **(kwargs or {}))

    with Spy():
        fn()
    return seen


@pytest.mark.parametrize("name", ["test-tiny-llama", "test-tiny-t5"])
def test_step_loop_reads_nothing_back_from_the_device(lazy, name):
    """No host read per step, in our code or in transformers' mask helpers (4-D masks on accelerators)."""
    from tpv_core.backbones import load_backbone

    bb = load_backbone(name, device="lazy", precision="fp32")
    origin = make_origin(bb, seed=0, length=4)

    def run(steps):
        return _count_host_syncs(lambda: tune_prompt(bb, get_task(MULTI), origin,
                                                     _small(steps=steps, eval_every=0, log_every=100)))

    two, six = run(2), run(6)
    # the same reads for 2 and for 6 steps: one read of all losses at the end, one of the final prompt
    assert two == six, (two, six)
    assert sum(six.values()) == 2, six


# ---- gradient checkpointing and compile ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["test-tiny-llama", "test-tiny-t5"])
def test_gradient_checkpointing_and_compile_change_no_number(name):
    from tpv_core.backbones import load_backbone

    task = get_task(MULTI)
    rows = load_split(task, "train")[:4]
    targets = torch.tensor([task.label_of(r) for r in rows])

    def loss_and_grad(bb):
        ids = bb.tokenize([bb.format(task, r) for r in rows])
        p = make_origin(bb, seed=0, length=4).tensor.clone().requires_grad_(True)
        loss = bb.loss(bb.collate(ids), p, task.label_set(), targets)
        loss.backward()
        return loss.detach(), p.grad

    plain = loss_and_grad(load_backbone(name, device="cpu", precision="fp32"))
    bb = load_backbone(name, device="cpu", precision="fp32")
    assert bb.enable_gradient_checkpointing() >= 2 and not bb.model.training  # dropout stays off
    ckpt = loss_and_grad(bb)
    assert torch.allclose(plain[0], ckpt[0], atol=1e-6) and torch.allclose(plain[1], ckpt[1], atol=1e-6)
    bb2 = load_backbone(name, device="cpu", precision="fp32")
    bb2.compile(backend="eager")  # the wiring; inductor needs a compiler and minutes on 2 cores
    comp = loss_and_grad(bb2)
    assert torch.allclose(plain[0], comp[0], atol=1e-5) and torch.allclose(plain[1], comp[1], atol=1e-5)
    assert bb.run_options()["gradient_checkpointing"] and bb2.run_options()["compiled"] == "eager"


# ---- 2 gloo processes, decoder, multi-token labels ------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GLOO_CFG = dict(steps=3, batch_size=3, eval_every=0, lr=0.3, log_every=1)


def _gloo_worker(rank, world, port, out):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import backbone_fixtures  # noqa: F401  (a spawned process registers the test-only models itself)
    from tpv_core import distributed as d
    from tpv_core.backbones import load_backbone

    ctx = d.setup("cpu")
    bb = load_backbone("test-tiny-llama", device=str(ctx.device), precision="fp32")
    task = get_task(MULTI)
    res = tune_prompt(bb, task, make_origin(bb, seed=0, length=4), TrainConfig(**GLOO_CFG))
    ev = evaluate(bb, task, res.prompt.tensor, prepare_split(bb, task, "validation", limit=9))  # 5 + 4 rows
    # plain lists: a tensor would travel by file descriptor, gone once this process exits
    out.put((rank, res.prompt.tensor.tolist(), res.history["loss"].tolist(), ev.predictions, ev.metrics))
    d.shutdown()


@pytest.mark.slow
def test_two_gloo_ranks_with_multi_token_labels_follow_the_global_token_average():
    from tpv_core.backbones import load_backbone
    from tpv_core.training import _Stream

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_gloo_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict((r, rest) for r, *rest in (q.get(timeout=300) for _ in procs))
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)

    bb = load_backbone("test-tiny-llama", device="cpu", precision="fp32")
    task = get_task(MULTI)
    single_cfg = TrainConfig(**{**GLOO_CFG, "batch_size": 6})
    single = tune_prompt(bb, task, make_origin(bb, seed=0, length=4), single_cfg)
    ev = evaluate(bb, task, single.prompt.tensor, prepare_split(bb, task, "validation", limit=9))
    for r in (0, 1):
        prompt, losses, preds, metrics = got[r]
        prompt = torch.tensor(prompt)
        assert torch.allclose(prompt, single.prompt.tensor, atol=1e-5), (prompt - single.prompt.tensor).abs().max()
        assert losses == pytest.approx(single.history["loss"].tolist(), rel=1e-5)
        assert preds == ev.predictions and metrics == ev.metrics

    # the check can fail: the first global batch gives the two ranks different answer-token counts, and
    # the mean of the per-rank means differs from the global token average the ranks reported
    stream = _Stream(bb, task, load_split(task, "train"), TrainConfig(**GLOO_CFG).resolved("decoder"), 0)
    idx = stream.next_indices(6, 0, 6)
    halves = [idx[:3], idx[3:]]
    labels = task.label_set()
    p0 = make_origin(bb, seed=0, length=4).tensor
    terms = [bb.loss_terms(bb.collate([stream.ids[i] for i in h]), p0, labels, stream.targets[h]) for h in halves]
    assert terms[0][1] != terms[1][1]
    per_rank_mean = sum(float(t) / n for t, n in terms) / 2
    global_mean = sum(float(t) for t, _ in terms) / sum(n for _, n in terms)
    assert global_mean == pytest.approx(got[0][1][0], rel=1e-5)
    assert abs(per_rank_mean - global_mean) > 1e-3


# ---- the real launcher -----------------------------------------------------------------------------------
LAUNCHER = """import sys
sys.path.insert(0, {tests!r})
import backbone_fixtures  # registers the test-only tiny models in this process
from tpv_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_torchrun_train_stores_the_single_process_prompt(tmp_path):
    """`tpv train` under `torchrun --nproc_per_node 2` (gloo) stores the prompt one process stores with the
    doubled batch (validation sharded across the ranks, 9 rows: 5 + 4), prints its JSON once, and `tpv eval`
    under torchrun agrees with one process. The CLI runs through a launcher that registers the test-only
    models (`tpv` itself knows only real providers)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[1]
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(tests=str(root / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    common = ["--backbone", "test-tiny-llama", "--task", "sst2", "--origin", "0", "--steps", "3", "--eval-every", "3",
              "--eval-limit", "9", "--length", "4", "--lr", "0.3", "--precision", "fp32", "--device", "cpu", "--json"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_free_port()), str(launcher)]

    def run(cmd):
        res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]

    one = run([sys.executable, str(launcher), "train", *common, "--batch-size", "6", "--store", str(tmp_path / "a")])
    two = run([*torchrun, "train", *common, "--batch-size", "3", "--store", str(tmp_path / "b")])
    assert len(one) == 1 and len(two) == 1  # rank 0 alone prints
    a, b = (load_file(r[0]["trained"][0]["path"]) for r in (one, two))
    assert (a["prompt"] - a["origin"]).abs().max() > 0.1  # it trained (the last step's prompt won validation)
    assert torch.allclose(a["prompt"], b["prompt"], atol=1e-5), (a["prompt"] - b["prompt"]).abs().max()
    assert one[0]["trained"][0]["val_accuracy"] == two[0]["trained"][0]["val_accuracy"]
    ev = ["eval", "--backbone", "test-tiny-llama", "--task", "sst2", "--split", "validation", "--limit", "9",
          "--precision", "fp32", "--device", "cpu", "--json", "--store", str(tmp_path / "b")]
    assert run([*torchrun, *ev]) == run([sys.executable, str(launcher), *ev])


# ---- the app's model cache on a GPU (fake models, fake memory) --------------------------------------------
class _FakeModel:
    def __init__(self, name, device):
        import contextlib

        self.name, self.device, self.forward_gate = name, torch.device(device), contextlib.nullcontext


def test_model_cache_keeps_one_model_per_gpu_unless_memory_allows_more(monkeypatch):
    from tpv_core.app import appstate

    freed = []
    monkeypatch.setattr(devmod, "release_memory", lambda device=None: freed.append(str(device)))
    memory = {"free": 10}
    cache = appstate.ModelCache(loader=lambda n: _FakeModel(n, "cuda:0"), headroom=0.3,
                                free_memory=lambda dev: (memory["free"], 100))
    cache.get("a")
    cache.get("b")  # 10 % free < 30 % headroom: the least recently used other model goes
    assert cache.loaded() == ["b"] and cache.evicted == ["a"] and freed == ["cuda:0"]
    memory["free"] = 80  # plenty left: both stay
    cache.get("c")
    assert sorted(cache.loaded()) == ["b", "c"]
    capped = appstate.ModelCache(loader=lambda n: _FakeModel(n, "cuda:0"), max_resident=1,
                                 free_memory=lambda dev: (99, 100))
    capped.get("a"), capped.get("b")
    assert capped.loaded() == ["b"]
    cpu = appstate.ModelCache(loader=lambda n: _FakeModel(n, "cpu"))
    cpu.get("a"), cpu.get("b")
    assert sorted(cpu.loaded()) == ["a", "b"]  # CPU models are kept, as before


def test_model_cache_switches_device_and_limits_concurrent_forward_passes(monkeypatch):
    import threading
    import time

    from tpv_core.app import appstate

    monkeypatch.setattr(devmod, "release_memory", lambda device=None: None)
    cache = appstate.ModelCache(loader=lambda n: _FakeModel(n, "cuda:0"), free_memory=lambda dev: (90, 100))
    model = cache.get("a")
    # one forward pass at a time on a GPU: a second thread waits for the first
    inside, most = [0], [0]

    def work():
        with model.forward_gate():
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert most[0] == 1
    with mock.patch("tpv_core.device.pick_device", lambda d=None: torch.device("cpu")):
        assert cache.set_device("cpu") == ["a"] and cache.loaded() == [] and cache.device == "cpu"


def test_out_of_memory_becomes_advice_and_releases_memory(monkeypatch):
    from tpv_core.app import appstate

    freed = []
    monkeypatch.setattr(devmod, "release_memory", lambda device=None: freed.append(str(device)))
    with pytest.raises(devmod.DeviceMemoryError, match="smaller batch.*smaller backbone"):
        with devmod.oom_guard("cuda:0", "evaluation of sst2"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert freed == ["cuda:0"]
    with pytest.raises(ValueError):  # other errors pass through untouched
        with devmod.oom_guard("cuda:0"):
            raise ValueError("not memory")
    msg = appstate.describe_failure(torch.OutOfMemoryError("CUDA out of memory"))
    assert "fewer rows" in msg and "released" in msg
    assert appstate.describe_failure(KeyError("x")) == "KeyError: 'x'"


# ---- bf16 weights, as on a GPU (run here on CPU) -------------------------------------------------------
@pytest.mark.parametrize("name", ["test-tiny-llama", "test-tiny-t5", "minilm-l6"])
def test_bf16_weights_keep_an_fp32_prompt_gradient_and_fp32_scores(name):
    """The GPU precision path (weights held in bf16, bf16 autocast, fp32 prompt) on the CPU: the loss and the
    scores come out fp32 and close to the fp32 model's, the prompt's gradient is fp32, the head is read in
    chunks, and the weights are left as they were."""
    import copy

    from tpv_core.backbones import load_backbone

    task = get_task(MULTI)
    rows = load_split(task, "train")[:6]
    targets = torch.tensor([task.label_of(r) for r in rows])
    ref = load_backbone(name, device="cpu", precision="fp32")
    bf = type(ref)(name=ref.name, model_id=ref.model_id, revision=ref.revision, tokenizer=ref.tokenizer,
                   model=copy.deepcopy(ref.model).to(torch.bfloat16), device=torch.device("cpu"),
                   compute_dtype=torch.bfloat16)
    assert bf.weight_dtype == torch.bfloat16
    ids = ref.tokenize([ref.format(task, r) for r in rows])
    out = []
    for bb in (ref, bf):
        p = make_origin(bb, seed=0, length=4).tensor.clone().requires_grad_(True)
        loss = bb.loss(bb.collate(ids), p, task.label_set(), targets)
        loss.backward()
        with torch.no_grad():
            scores = bb.label_scores(bb.collate(ids), p, task.label_set())
        assert loss.dtype == scores.dtype == p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
        out.append((float(loss.detach()), scores))
    assert out[1][0] == pytest.approx(out[0][0], rel=0.02)
    assert torch.allclose(out[1][1], out[0][1], atol=0.05 * float(out[0][1].abs().max()) + 0.05)
    assert all(p.dtype == torch.bfloat16 for p in bf.model.parameters())
