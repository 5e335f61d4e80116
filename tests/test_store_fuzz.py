"""Fuzz test of the store's read path: ~250 seeded mutants of one stored prompt.

Every load must either raise a `StoreError` whose message names the file, or return data equal to the
original (tensors, origin, task, backbone, metadata); never another exception, never a hang (each case
runs under a 2 s alarm). The index of a store holding every mutant plus good files lists every good file.
Run with ``-s`` to see the outcome counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import struct
from pathlib import Path

import pytest
import torch

from tpv_core.prompts import SoftPrompt, make_origin
from tpv_core.store import PromptStore, StoreError, load_prompt
from tpv_core.store_schema import meta_checksum, tensor_checksum

SEED = 20
CASE_TIMEOUT_S = 2.0
EMB = torch.randn(6000, 16, generator=torch.Generator().manual_seed(0))

WRONG_VALUES = [["a", 1], 3, None, "zero", {"x": 1}, True, -1.5, float("nan")]
META_FIELDS = ["schema", "backbone", "task", "length", "dim", "origin", "metrics", "training", "steps", "wall_time_s",
               "created", "library_version", "backbone_model_id", "backbone_revision", "best_step", "readout"]
REQUIRED = ("schema", "backbone", "task", "length", "dim", "origin")
# values of the right type for a field (a wrong-type mutant never uses them: such a file is valid, not corrupt)
RIGHT_TYPE = {
    **{f: (lambda v: v is None or isinstance(v, str)) for f in ("created", "library_version", "backbone_model_id",
                                                               "backbone_revision")},
    **{f: (lambda v: v is None or isinstance(v, dict)) for f in ("metrics", "training")},
    "readout": lambda v: v is None,
    **{f: (lambda v: v is None or type(v) is int and v >= 0) for f in ("steps", "best_step")},
    "wall_time_s": lambda v: v is None or type(v) in (int, float) and v == v and v >= 0,
    "task": lambda v: isinstance(v, str),  # any non-empty name is a valid task outside a store's folders
}
ORIGIN_FIELDS = ["backbone", "kind", "seed", "length", "dim", "vocab_limit", "id"]


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def alarm(seconds: float):
    def boom(signum, frame):
        raise CaseTimeout()

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def good_prompt(seed: int = 0) -> SoftPrompt:
    o = make_origin(embeddings=EMB, backbone_name="toy", seed=seed, length=4)
    meta = {"metrics": {"accuracy": 0.75}, "steps": 10, "best_step": 5, "wall_time_s": 1.5, "training": {"lr": 0.1},
            "backbone_revision": "test", "backbone_model_id": "toy/model", "readout": {"sst2": "descriptions"}}
    return SoftPrompt(o.tensor + 0.1 * (seed + 1), o, "sst2", "toy", meta)


def split(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def join(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header, allow_nan=True).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def with_meta(blob: bytes, edit, checksums: str) -> bytes:
    """Rewrite the tpv metadata with ``edit(meta)``; ``checksums``: keep (stale), drop, or recompute."""
    header, data = split(blob)
    meta = json.loads(header["__metadata__"]["tpv"])
    edit(meta)
    if checksums == "drop":
        meta.pop("checksum", None)
        meta.pop("meta_checksum", None)
    elif checksums == "recompute":
        meta["checksum"] = tensor_checksum(header, data) if "prompt" in header and "origin" in header else "sha256:0"
        meta["meta_checksum"] = meta_checksum(meta)
    header["__metadata__"]["tpv"] = json.dumps(meta, allow_nan=True)
    return join(header, data)


def with_header(blob: bytes, edit, recompute: bool = True) -> bytes:
    """Rewrite the tensor entries of the header with ``edit(header)`` (checksums recomputed when possible)."""
    header, data = split(blob)
    edit(header)
    if recompute:
        meta = json.loads(header["__metadata__"]["tpv"])
        with contextlib.suppress(Exception):
            meta["checksum"] = tensor_checksum(header, data)
        meta["meta_checksum"] = meta_checksum(meta)
        header["__metadata__"]["tpv"] = json.dumps(meta)
    return join(header, data)


def with_values(blob: bytes, tensor: str, value: float) -> bytes:
    """Write ``value`` into a few elements of one tensor and recompute the checksums (so only the finite check
    can catch it)."""
    header, data = split(blob)
    start, end = header[tensor]["data_offsets"]
    buf = bytearray(data)
    for pos in (start, start + 4 * 7, end - 4):
        buf[pos : pos + 4] = struct.pack("<f", value)
    data = bytes(buf)
    meta = json.loads(header["__metadata__"]["tpv"])
    meta["checksum"] = tensor_checksum(header, data)
    meta["meta_checksum"] = meta_checksum(meta)
    header["__metadata__"]["tpv"] = json.dumps(meta)
    return join(header, data)


def mutants(blob: bytes, rng: random.Random) -> list[tuple[str, bytes | str]]:
    """(name, bytes) pairs, or (name, special kind) for files that are not plain bytes."""
    header, data = split(blob)
    n_head = len(blob) - len(data)
    out: list[tuple[str, bytes | str]] = []
    for i in range(20):
        cut = rng.randrange(0, len(blob))
        out.append((f"truncate@{cut}", blob[:cut]))
    for i in range(40):
        pos = rng.randrange(0, n_head)
        b = bytearray(blob)
        b[pos] ^= 1 << rng.randrange(8)
        out.append((f"header-flip@{pos}", bytes(b)))
    for i in range(30):
        pos = rng.randrange(n_head, len(blob))
        b = bytearray(blob)
        b[pos] ^= 1 << rng.randrange(8)
        out.append((f"body-flip@{pos}", bytes(b)))
    for field in META_FIELDS:
        wrong = [v for v in WRONG_VALUES if not RIGHT_TYPE.get(field, lambda v: False)(v)]
        for value in rng.sample(wrong, 4):
            mode = rng.choice(["recompute", "drop", "keep"])
            out.append((f"meta.{field}={value!r}/{mode}",
                        with_meta(blob, lambda m, f=field, v=value: m.__setitem__(f, v), mode)))
        if field in REQUIRED:
            out.append((f"meta.{field} deleted", with_meta(blob, lambda m, f=field: m.pop(f, None), "recompute")))
    for field in ORIGIN_FIELDS:
        for value in rng.sample(WRONG_VALUES, 4):
            out.append((f"origin.{field}={value!r}",
                        with_meta(blob, lambda m, f=field, v=value: m["origin"].__setitem__(f, v), "recompute")))
    for value in WRONG_VALUES[:5]:  # the whole tpv entry of the wrong type
        hdr, dat = split(blob)
        hdr["__metadata__"]["tpv"] = json.dumps(value)
        out.append((f"meta is {value!r}", join(hdr, dat)))
    for dtype in ("I32", "U32", "F64", "I64", "F16", "BF16", "BOOL", "U8", None, 7):
        for t in ("prompt", "origin"):
            out.append((f"{t}.dtype={dtype}", with_header(blob, lambda h, t=t, d=dtype: h[t].__setitem__("dtype", d))))
    for shape in ([5, 16], [4, 17], [64], [4, 16, 1], None, "4x16", [4.0, 16], [True, 16], [2, 32], [-4, -16]):
        for t in ("prompt", "origin"):
            out.append((f"{t}.shape={shape}", with_header(blob, lambda h, t=t, s=shape: h[t].__setitem__("shape", s))))
    for offsets in (["0", "256"], [0], None, [256, 0], [0, 10**12], [-8, 248], [0, 255]):
        out.append((f"prompt.offsets={offsets}",
                    with_header(blob, lambda h, o=offsets: h["prompt"].__setitem__("data_offsets", o))))
    out.append(("extra tensor", with_header(blob, lambda h: h.__setitem__("extra", dict(h["origin"])))))
    out.append(("prompt entry is a list", with_header(blob, lambda h: h.__setitem__("prompt", [1, 2]), False)))
    out.append(("__metadata__ is a list", with_header(blob, lambda h: h.__setitem__("__metadata__", ["x"]), False)))
    out.append(("tpv is a number", with_header(blob, lambda h: h["__metadata__"].__setitem__("tpv", 3), False)))
    for value in (float("nan"), float("inf"), float("-inf")):
        for t in ("prompt", "origin"):
            out.append((f"{t} holds {value}", with_values(blob, t, value)))
    out.append(("header length huge", struct.pack("<Q", 2**62) + blob[8:]))
    out.append(("header length zero", struct.pack("<Q", 0) + blob[8:]))
    out.append(("empty file", b""))
    out.append(("not json", struct.pack("<Q", 16) + b"not json at all!" + blob[24:]))
    out.append(("fifo", "fifo"))
    out.append(("symlink loop", "loop"))
    out.append(("directory", "dir"))
    out.append(("dangling symlink", "dangling"))
    return out


def materialise(path: Path, content: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if content == "fifo":
        os.mkfifo(path)
    elif content == "loop":
        os.symlink(path.name, path)  # points at itself
    elif content == "dir":
        path.mkdir()
    elif content == "dangling":
        os.symlink(path.with_name("nowhere"), path)
    else:
        path.write_bytes(content)


def same_data(a: SoftPrompt, b: SoftPrompt) -> bool:
    return (torch.equal(a.tensor, b.tensor) and torch.equal(a.origin.tensor, b.origin.tensor) and a.origin == b.origin
            and a.task == b.task and a.backbone == b.backbone and a.metadata == b.metadata)


def test_fuzz_every_load_is_an_own_error_or_the_original(tmp_path):
    store = PromptStore(tmp_path / "good")
    path = store.save(good_prompt())
    blob = path.read_bytes()
    original = load_prompt(path)
    cases = mutants(blob, random.Random(SEED))
    assert len(cases) >= 200
    counts = {"own error": 0, "identical data": 0, "anything else": 0}
    problems = []
    for i, (name, content) in enumerate(cases):
        target = tmp_path / "mut" / f"m{i:03d}.safetensors"
        materialise(target, content)
        try:
            with alarm(CASE_TIMEOUT_S):
                got = load_prompt(target)
        except StoreError as exc:
            if str(target) in str(exc) and "\n" not in str(exc):
                counts["own error"] += 1
            else:
                counts["anything else"] += 1
                problems.append(f"{name}: StoreError without the file name: {exc}")
            continue
        except BaseException as exc:  # noqa: BLE001 - that is what we count
            counts["anything else"] += 1
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if same_data(got, original):
            counts["identical data"] += 1
        else:
            counts["anything else"] += 1
            problems.append(f"{name}: loaded data that differs from the original")
    print(f"\nfuzz outcomes over {len(cases)} mutants (seed {SEED}): {counts}")
    assert counts["anything else"] == 0, "\n".join(problems[:20])
    assert counts["own error"] > 150


def test_fuzz_index_lists_every_good_file(tmp_path):
    store = PromptStore(tmp_path)
    good = [store.save(good_prompt(seed)) for seed in range(4)]
    blob = good[0].read_bytes()
    cases = mutants(blob, random.Random(SEED + 1))
    for i, (name, content) in enumerate(cases):  # each mutant in a folder of its own, so names never collide
        materialise(tmp_path / "toy" / f"mut{i:03d}" / "vocab5000-s0-L4.safetensors", content)
    errors: list[str] = []
    with alarm(20.0):
        df = store.index(errors=errors)
    assert sorted(df["path"]) == sorted(str(p) for p in good)
    assert len(errors) == len(cases)  # every mutant is skipped with a one-line note (wrong folder at the least)
    assert all("\n" not in e for e in errors)
    with alarm(20.0):
        assert len(store.load_all()) == len(good)


def test_file_in_the_wrong_folder_is_refused(tmp_path):
    store = PromptStore(tmp_path)
    path = store.save(good_prompt())
    moved = tmp_path / "toy" / "mnli" / path.name
    moved.parent.mkdir(parents=True)
    path.rename(moved)
    errors: list[str] = []
    assert store.index(errors=errors).empty and "task 'sst2'" in errors[0] and "mnli/ folder" in errors[0]
    with pytest.raises(StoreError, match="mnli/ folder"):
        store.load("toy", "mnli", good_prompt().origin.id)
