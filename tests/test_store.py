import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tpv_core.prompts import SoftPrompt, make_origin
from tpv_core.store import (
    SCHEMA_VERSION,
    PromptStore,
    StoreError,
    load_prompt,
    read_metadata,
)
from tpv_core.peft_io import export_peft, export_soft_prompt, import_peft

EMB = torch.randn(6000, 16, generator=torch.Generator().manual_seed(0))


def make_prompt(task="sst2", seed=0, backbone="toy/model"):
    o = make_origin(embeddings=EMB, backbone_name=backbone, seed=seed, length=4)
    meta = {"metrics": {"accuracy": 0.75}, "steps": 10, "wall_time_s": 1.5, "training": {"lr": 0.1},
            "backbone_revision": "test"}
    return SoftPrompt(o.tensor + 0.1, o, task, backbone, meta)


def test_round_trip_and_index(tmp_path):
    store = PromptStore(tmp_path)
    p = make_prompt()
    path = store.save(p)
    assert path == tmp_path / "toy--model" / "sst2" / "vocab5000-s0-L4.safetensors"
    q = store.load("toy/model", "sst2", p.origin.id)
    assert torch.equal(q.tensor, p.tensor) and torch.equal(q.origin.tensor, p.origin.tensor)
    assert q.origin == p.origin and q.metrics == {"accuracy": 0.75} and q.metadata["steps"] == 10
    meta = read_metadata(path)
    for key in ("schema", "backbone", "backbone_revision", "length", "dim", "origin", "task", "training",
                "metrics", "steps", "wall_time_s", "library_version"):
        assert key in meta
    store.save(make_prompt("mnli", seed=1))
    store.save(make_prompt("mnli", seed=2, backbone="other"))
    df = store.index()
    assert len(df) == 3 and set(df["task"]) == {"sst2", "mnli"}
    assert len(store.index(task="mnli")) == 2
    assert len(store.index(backbone="other")) == 1
    assert len(store.index(origin="1")) == 1 and len(store.index(origin="vocab5000-s0-L4")) == 1
    assert df.loc[df.task == "sst2", "metric_accuracy"].item() == 0.75


def test_empty_store_index(tmp_path):
    assert PromptStore(tmp_path / "none").index().empty


def test_index_reads_headers_only(tmp_path, monkeypatch):
    store = PromptStore(tmp_path)
    store.save(make_prompt())
    import tpv_core.store as st

    monkeypatch.setattr(st, "st_load", lambda *a, **k: pytest.fail("index() decoded tensors"))
    assert len(store.index()) == 1


def test_atomic_write_failed_rename_keeps_old_file(tmp_path, monkeypatch):
    store = PromptStore(tmp_path)
    old = make_prompt()
    path = store.save(old)

    def boom(*a, **k):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", boom)
    new = SoftPrompt(old.tensor * 2, old.origin, old.task, old.backbone, {})
    with pytest.raises(OSError):
        store.save(new, overwrite=True)
    monkeypatch.undo()
    assert torch.equal(load_prompt(path).tensor, old.tensor)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_process_killed_mid_write_leaves_old_file(tmp_path):
    store = PromptStore(tmp_path)
    old = make_prompt()
    path = store.save(old)
    script = textwrap.dedent(f"""
        import os, time, torch
        from tpv_core.store import PromptStore, load_prompt
        p = load_prompt({str(path)!r})
        p.tensor.mul_(3)
        os.fsync = lambda fd: (print("writing", flush=True), time.sleep(60))  # hang between write and rename
        PromptStore({str(tmp_path)!r}).save(p, overwrite=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert any(p.name.endswith(".tmp") for p in path.parent.iterdir())  # the new bytes are on disk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.equal(load_prompt(path).tensor, old.tensor)
    assert len(PromptStore(tmp_path).index()) == 1


def _write_raw(path: Path, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_bad_files_are_rejected_clearly(tmp_path):
    store = PromptStore(tmp_path)
    path = store.save(make_prompt())
    good = path.read_bytes()

    path.write_bytes(good[: len(good) - 10])
    with pytest.raises(StoreError, match="truncated"):
        load_prompt(path)
    path.write_bytes(good[:5])
    with pytest.raises(StoreError, match="truncated"):
        load_prompt(path)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"not json at all!" + b"x" * 100)
    with pytest.raises(StoreError, match="corrupt"):
        load_prompt(path)

    meta = json.loads(read_metadata_from(good))
    # missing tensor
    other = tmp_path / "missing.safetensors"
    save_file({"prompt": torch.zeros(4, 16)}, other, metadata={"tpv": json.dumps(meta)})
    with pytest.raises(StoreError, match="missing tensor 'origin'"):
        load_prompt(other)
    # newer schema
    newer = dict(meta, schema=SCHEMA_VERSION + 1)
    save_file({"prompt": torch.zeros(4, 16), "origin": torch.zeros(4, 16)}, other, metadata={"tpv": json.dumps(newer)})
    with pytest.raises(StoreError, match="newer"):
        load_prompt(other)
    # shape disagrees with the header
    save_file({"prompt": torch.zeros(5, 16), "origin": torch.zeros(5, 16)}, other, metadata={"tpv": json.dumps(meta)})
    with pytest.raises(StoreError, match="shape"):
        load_prompt(other)
    # not ours
    save_file({"prompt": torch.zeros(4, 16)}, other)
    with pytest.raises(StoreError, match="no tpv metadata"):
        load_prompt(other)
    # index skips broken files and reports them
    path.write_bytes(good[:100])
    errors = []
    assert store.index(errors=errors).empty and len(errors) == 1


def read_metadata_from(blob: bytes) -> str:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n])["__metadata__"]["tpv"]


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def test_peft_round_trip(tmp_path):
    from peft import PeftModel

    model = tiny_llama()
    o = make_origin(embeddings=model.get_input_embeddings().weight, backbone_name="tiny", seed=0, length=4)
    p = SoftPrompt(o.tensor + 0.3, o, "sst2", "tiny", {"backbone_model_id": "tiny"})
    out = export_soft_prompt(p, tmp_path / "adapter", family="decoder")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["num_transformer_submodules"] == 1 and cfg["num_virtual_tokens"] == 4
    peft_model = PeftModel.from_pretrained(model, str(out))
    emb = peft_model.prompt_encoder["default"].embedding.weight
    assert torch.allclose(emb.detach(), p.tensor)
    # and back: with our origin file, or with an origin given explicitly
    back = import_peft(out, task="sst2", backbone="tiny")
    assert torch.equal(back.tensor, p.tensor) and torch.equal(back.origin.tensor, o.tensor)
    (out / "tpv_origin.safetensors").unlink()
    with pytest.raises(StoreError, match="origin"):
        import_peft(out, task="sst2", backbone="tiny")
    again = import_peft(out, task="sst2", backbone="tiny", origin=o)
    assert torch.allclose(again.vector().tensor, p.vector().tensor)


def test_export_combination_and_bad_adapters(tmp_path):
    o = make_origin(embeddings=EMB, backbone_name="toy", seed=0, length=4)
    export_peft(o.tensor * 2, tmp_path / "comb", base_model="toy", family="encoder")
    assert json.loads((tmp_path / "comb" / "adapter_config.json").read_text())["task_type"] == "FEATURE_EXTRACTION"
    with pytest.raises(StoreError, match="not a PEFT adapter"):
        import_peft(tmp_path / "nothing", task="t", backbone="toy", origin=o)
    (tmp_path / "comb" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(StoreError, match="PROMPT_TUNING"):
        import_peft(tmp_path / "comb", task="t", backbone="toy", origin=o)
    with pytest.raises(ValueError, match="2-D"):
        export_peft(torch.zeros(3), tmp_path / "x", base_model="toy")
