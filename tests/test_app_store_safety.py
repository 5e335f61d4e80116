"""The app's side of store safety (Streamlit AppTest): two sessions saving one combination name (the second
is asked to confirm), a non-finite combination refused, a corrupt file skipped by the Library page."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TPV_NO_WARMUP", "1")

import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

from apptest_helpers import ROOT, open_page  # noqa: E402



@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_store, minilm):
    from tpv_core.store import PromptStore

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pages import _ui

    _ui.model_cache().put("minilm-l6", minilm)
    root = tmp_path_factory.mktemp("safety") / "store"
    shutil.copytree(tiny_store.root, root)
    return PromptStore(root)


def messages(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def test_two_sessions_saving_one_name_the_second_is_asked(store):
    a = open_page(store.root, "combine", cmb_limit=50)
    b = open_page(store.root, "combine", cmb_limit=50)
    name = next(t.value for t in a.text_input if t.label == "Task name in the store")
    assert name == next(t.value for t in b.text_input if t.label == "Task name in the store")
    a.button(key="cmb_save").click().run()
    assert not messages(a, "error") and not messages(a, "warning")
    saved = store.index(task=name)
    assert len(saved) == 1
    path = Path(saved["path"][0])
    first = path.read_bytes()

    b.slider(key=[s.key for s in b.slider if s.key.startswith("w_")][0]).set_value(0.5).run()
    b.text_input(key=next(t.key for t in b.text_input if t.label == "Task name in the store")).set_value(name).run()
    b.button(key="cmb_save").click().run()
    assert any("already holds" in w and name in w for w in messages(b, "warning")), messages(b, "warning")
    assert path.read_bytes() == first  # nothing replaced without a yes
    b.button(key="cmb_replace").click().run()
    assert not messages(b, "error")
    assert path.read_bytes() != first and len(store.index(task=name)) == 1
    weights = [v["weight"] for v in store.load_path(path).metadata["combination"]["vectors"]]
    assert 0.5 in weights
    path.unlink()


def test_a_non_finite_combination_is_refused_and_not_saved(tmp_path, store):
    import torch

    from tpv_core.store import PromptStore

    huge = PromptStore(tmp_path / "huge")
    for p in store.load_all(origin="0"):
        huge.save(type(p)(p.origin.tensor + 3e38, p.origin, p.task, p.backbone, p.metadata))
    at = open_page(huge.root, "combine", cmb_limit=50)
    errs = messages(at, "error")
    assert any("NaN or infinite" in e for e in errs), errs
    assert "cmb_save" not in [b.key for b in at.button]  # the page stopped: nothing to save
    assert len(huge.index()) == 2 and all(torch.isfinite(p.tensor).all() for p in huge.load_all())


def test_library_skips_a_corrupt_file_and_lists_the_rest(tmp_path, store):
    root = tmp_path / "lib"
    shutil.copytree(store.root, root)
    import json
    import struct

    bad = next(root.glob("*/*/*.safetensors"))  # the case: `metrics` a list (checksums made consistent)
    blob = bad.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["tpv"])
    meta["metrics"] = [0.5]
    from tpv_core.store_schema import meta_checksum

    meta["meta_checksum"] = meta_checksum(meta)
    header["__metadata__"]["tpv"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    bad.write_bytes(struct.pack("<Q", len(raw)) + raw + blob[8 + n :])
    os.mkfifo(root / "minilm-l6" / "sentences_yelp" / "fifo.safetensors")
    at = open_page(root)
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 3
    notes = " ".join(str(m) for kind in ("text", "warning", "caption", "markdown", "error") for m in messages(at, kind))
    assert "metrics" in notes and "not a regular file" in notes, notes
