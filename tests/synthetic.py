"""Hand-made prompts for the analysis tests: each vector is a task direction plus small noise, so the
same task across origins gives similar vectors and different tasks give unrelated ones."""

import torch

from tpv_core.prompts import SoftPrompt, make_origin


def synthetic_prompts(backbone="toy", dim=16, tasks=("a", "b", "c"), seeds=(0, 1, 2), length=4, noise=0.3, base=0,
                      gen_seed=1000):
    gen = torch.Generator().manual_seed(gen_seed + base)
    emb = torch.randn(6000, dim, generator=gen)
    directions = {t: torch.randn(length, dim, generator=gen) for t in tasks}
    out = []
    for s in seeds:
        origin = make_origin(embeddings=emb, backbone_name=backbone, seed=s, length=length)
        for t in tasks:
            tensor = origin.tensor + directions[t] + noise * torch.randn(length, dim, generator=gen)
            out.append(SoftPrompt(tensor, origin, t, backbone, {"metrics": {"acc": 0.5}}))
    return out
