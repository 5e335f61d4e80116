"""Host reads (device-to-host syncs) of a ``tune_prompt`` run, counted on PyTorch's ``lazy`` device.

A read is a Python-level call that brings a lazy tensor's value to the host (``item``, ``bool``, ``int``,
``float``, ``tolist``, ``nonzero``, ``cpu``), attributed to the first frame outside torch; on a GPU each is a
sync that stalls the step. Runs of 2 and 6 steps (no validation, ``log_every`` above the step count): what
the step loop adds per step is (reads(6) - reads(2)) / 4. Boolean-mask indexing inside torch is not counted.

    OMP_NUM_THREADS=1 python -m benchmarks.host_reads [--models test-tiny-llama test-tiny-t5]

The test-only tiny models are registered by tests/backbone_fixtures.py (imported here). For code whose
``_lm_logits`` names autocast for the device (before issue 21) pass ``--autocast-shim``: torch refuses
``torch.autocast("lazy")``, the shim makes it a no-op for that device only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import traceback
from pathlib import Path

import torch


def shim_autocast() -> None:
    real = torch.autocast

    class _Autocast:
        def __init__(self, device_type, *a, **k):
            self.cm = contextlib.nullcontext() if device_type == "lazy" else real(device_type, *a, **k)

        def __enter__(self):
            return self.cm.__enter__()

        def __exit__(self, *exc):
            return self.cm.__exit__(*exc)

    torch.autocast = _Autocast


def count_reads(fn) -> collections.Counter:
    from torch.overrides import TorchFunctionMode

    reads = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.__int__,
             torch.Tensor.__float__, torch.Tensor.nonzero, torch.Tensor.cpu}
    seen: collections.Counter = collections.Counter()

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in reads and args and isinstance(args[0], torch.Tensor) and args[0].device.type == "lazy":
                frames = [f for f in traceback.extract_stack()[:-1] if "site-packages/torch/" not in f.filename]
                where = frames[-1].filename.split("site-packages/")[-1]
                seen[(func.__name__, where.rsplit("tpv_core/", 1)[-1], frames[-1].lineno)] += 1
            return func(*args, **(kwargs or {}))

    with Spy():
        fn()
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["test-tiny-llama", "test-tiny-t5"])
    ap.add_argument("--task", default="qnli")
    ap.add_argument("--autocast-shim", action="store_true")
    args = ap.parse_args()
    import torch._lazy.ts_backend

    torch._lazy.ts_backend.init()
    if args.autocast_shim:
        shim_autocast()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import backbone_fixtures  # noqa: F401  (registers the test-only tiny models)

    from tpv_core.backbones import load_backbone
    from tpv_core.prompts import make_origin
    from tpv_core.tasks import get_task
    from tpv_core.training import TrainConfig, tune_prompt

    task = get_task(args.task)
    for name in args.models:
        bb = load_backbone(name, device="lazy", precision="fp32")
        origin = make_origin(bb, seed=0, length=4)
        counts = {}
        for steps in (2, 6):
            kw = dict(steps=steps, batch_size=4, eval_every=0, lr=0.1)
            if "log_every" in TrainConfig.__dataclass_fields__:
                kw["log_every"] = 100
            counts[steps] = count_reads(lambda: tune_prompt(bb, task, origin, TrainConfig(**kw)))
        per_step = (sum(counts[6].values()) - sum(counts[2].values())) / 4
        print(f"{name}: {per_step:g} host reads per step; run of 6 steps: {sum(counts[6].values())} reads "
              f"{dict(counts[6])}")


if __name__ == "__main__":
    main()
