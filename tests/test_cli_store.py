import json
import subprocess
import sys

import torch

from tpv_core.cli import main
from tpv_core.prompts import SoftPrompt, make_origin
from tpv_core.store import PromptStore


def test_help_runs():
    out = subprocess.run([sys.executable, "-m", "tpv_core", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "store" in out.stdout


def test_store_list_empty_and_filled(tmp_path, capsys):
    assert main(["store", "list", str(tmp_path / "zoo")]) == 0
    assert "no prompts" in capsys.readouterr().out
    (tmp_path / "zoo").mkdir()
    assert main(["store", "list", str(tmp_path / "zoo")]) == 0
    assert "no prompts" in capsys.readouterr().out
    emb = torch.randn(6000, 8)
    o = make_origin(embeddings=emb, backbone_name="toy", seed=1, length=3)
    PromptStore(tmp_path / "zoo").save(SoftPrompt(o.tensor, o, "sst2", "toy", {"metrics": {"accuracy": 0.5}}))
    assert main(["store", "list", str(tmp_path / "zoo")]) == 0
    out = capsys.readouterr().out
    assert "sst2" in out and "1 prompt(s)" in out
    assert main(["store", "list", str(tmp_path / "zoo"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prompts"][0]["task"] == "sst2"
    assert main(["store", "export", str(tmp_path / "zoo"), "--backbone", "toy", "--task", "sst2", "--origin", "1",
                 "--out", str(tmp_path / "ad")]) == 0
    assert (tmp_path / "ad" / "adapter_model.safetensors").exists()
    assert main(["store", "export", str(tmp_path / "zoo"), "--backbone", "toy", "--task", "mnli", "--origin", "1",
                 "--out", str(tmp_path / "ad2")]) == 2
    assert "no stored prompt" in capsys.readouterr().err
