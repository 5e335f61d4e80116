"""docs/notebooks/tour.ipynb runs top to bottom on the real MiniLM and the shipped zoo (nbclient), so it never
rots: every cell also checks what it shows (shapes, 50 scored rows, the PEFT round trip)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install the dev extra (nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install the dev extra (nbclient, ipykernel)")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "notebooks" / "tour.ipynb"


@pytest.mark.slow
def test_tour_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.delenv("TPV_STORE", raising=False)  # the notebook opens the shipped zoo
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    # the kernel imports this checkout's tpv_core, whatever the environment has installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # run from elsewhere
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "PROMPT_TUNING" in text and "adapter_model.safetensors" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})
               or "text/html" in o.get("data", {})]
    assert len(figures) >= 2  # the heatmaps and the UMAP
