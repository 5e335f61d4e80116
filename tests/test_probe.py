"""Linear probes of frozen features (tpv_core.probe, `tpv probe`)."""

import json
import random

import numpy as np
import pytest

from tpv_core.cli import main
from tpv_core.probe import feature_matrix, linear_probe
from tpv_core.tasks import get_task
from tpv_core.tasks import make_custom_task

SENTENCES = [f"{s} {o}" for s in ("The dog", "A child", "My neighbour", "The old man", "Her sister", "The pilot")
             for o in ("reads a book.", "cooks dinner.", "plays chess.", "paints a wall.", "rides a bike.",
                       "sings a song.", "fixes the car.", "writes a letter.")]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def same_pair_task(tmp_path_factory):
    """Two text fields; label 1 when the second repeats the first, 0 when it is another sentence."""
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("pairs")
    for split, n in (("train", 96), ("validation", 48), ("test", 16)):
        rows = []
        for i in range(n):
            a = rng.choice(SENTENCES)
            b = a if i % 2 else rng.choice([s for s in SENTENCES if s != a])
            rows.append({"first": a, "second": b, "label": "same" if i % 2 else "other"})
        _write_jsonl(folder / f"{split}.jsonl", rows)
    return make_custom_task("same-pair", folder, ["first", "second"], "label")


def test_pair_view_separates_what_it_should(minilm, same_pair_task):
    res = {r.view: r for r in linear_probe(minilm, same_pair_task, views=("readout", "pair", "cosine"), c=1.0)}
    pair = res["pair"]
    assert pair.train_rows == 96 and pair.eval_rows == 48 and pair.eval_split == "validation"
    assert pair.majority == pytest.approx(0.5)
    assert pair.metrics["accuracy"] >= 0.9  # |u - v| is zero exactly for the repeated sentence
    assert res["cosine"].metrics["accuracy"] >= 0.9  # cosine 1 exactly for the repeated sentence
    assert set(res["readout"].metrics) == {"accuracy", "f1"}
    d = pair.as_dict()
    assert d["view"] == "pair" and d["accuracy"] == pair.metrics["accuracy"]


def test_readout_probe_on_a_bundled_task(minilm):
    [r] = linear_probe(minilm, get_task("sst2"), train_limit=120, eval_limit=80, c=1.0)
    assert r.train_rows == 120 and r.eval_rows == 80
    assert r.metrics["accuracy"] > r.majority + 0.1  # the frozen encoder separates sentiment


def test_probe_errors(minilm, same_pair_task):
    sst2 = get_task("sst2")
    rows = [{"sentence": "fine", "label": 1}]
    with pytest.raises(ValueError, match="two text fields"):
        feature_matrix(minilm, sst2, rows, "pair")
    with pytest.raises(ValueError, match="cosine view needs a task with two text fields"):
        feature_matrix(minilm, sst2, rows, "cosine")
    with pytest.raises(ValueError, match="unknown probe view"):
        linear_probe(minilm, sst2, views=("cls",))
    with pytest.raises(ValueError, match="must be > 0"):
        linear_probe(minilm, sst2, c=0)
    with pytest.raises(ValueError, match="one class only"):
        linear_probe(minilm, same_pair_task, train_limit=1, eval_limit=4)


def test_cli_probe_json(capsys):
    assert main(["probe", "--backbone", "minilm-l6", "--task", "sst2", "qnli", "--views", "readout", "pair",
                 "--train-limit", "40", "--limit", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backbone"] == "minilm-l6"
    assert [(r["task"], r["view"]) for r in out["results"]] == [("sst2", "readout"), ("qnli", "readout"),
                                                                ("qnli", "pair")]
    assert all(0 <= r["accuracy"] <= 1 and r["train_rows"] == 40 for r in out["results"])
    assert main(["probe", "--backbone", "minilm-l6", "--task", "nope"]) == 2


def test_cosine_view_is_the_cosine_of_the_two_fields(minilm, same_pair_task):
    rows = [{"first": "A child plays chess.", "second": "A child plays chess.", "label": "same"},
            {"first": "A child plays chess.", "second": "The pilot fixes the car.", "label": "other"}]
    x = feature_matrix(minilm, same_pair_task, rows, "cosine")
    assert x.shape == (2, 1)
    assert x[0, 0] == pytest.approx(1.0, abs=1e-5) and x[1, 0] < 0.9
    pair = feature_matrix(minilm, same_pair_task, rows, "pair")
    u, v = pair[:, :384], pair[:, 384:768]
    cos = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    assert x[:, 0] == pytest.approx(cos, abs=1e-5)
