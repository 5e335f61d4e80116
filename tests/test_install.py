"""A non-editable install carries its data: the wheel built from this checkout holds the task subsets and the
zoo under ``tpv_core/_data``, and the installed package finds them from any working directory.

The wheel is installed with ``--no-deps --target`` into a temporary folder and put first on ``PYTHONPATH``
(its dependencies come from the running environment), so the check takes seconds, not the minutes of a
fresh venv; the README gives the full ``pip install .`` into a fresh venv, which was run by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    # build from a clean copy: setuptools reuses a build/ folder in the source tree, stale modules included
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", "results"))
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
          str(src)], cwd=tmp, env=env)
    wheel = next((tmp / "dist").glob("tpv_workbench-*.whl"))
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)],
         cwd=tmp, env=env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    run_env = {**os.environ, "PYTHONPATH": str(tmp / "site"), "HF_HUB_OFFLINE": "1"}
    run_env.pop("TPV_DATA_DIR", None)
    run_env.pop("TPV_STORE", None)
    return wheel, tmp / "site", elsewhere, run_env


@pytest.mark.slow
def test_wheel_holds_the_bundled_data(installed):
    wheel = installed[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tpv_core/_data/tasks/sst2/validation.jsonl" in names
    assert "tpv_core/_data/tasks/PROVENANCE.md" in names
    assert any(n.startswith("tpv_core/_data/zoo/minilm-l6/sst2/") and n.endswith(".safetensors") for n in names)
    modules = {n for n in names if n.startswith("tpv_core/") and n.endswith(".py")}
    assert modules == {str(p.relative_to(ROOT)) for p in (ROOT / "tpv_core").rglob("*.py")}  # nothing stale


@pytest.mark.slow
def test_installed_package_finds_tasks_and_zoo_from_another_directory(installed):
    _, site, elsewhere, env = installed
    probe = ("import json, tpv_core, tpv_core.paths as p; from tpv_core.store import PromptStore; "
             "from tpv_core.tasks import get_task, load_split; "
             "print(json.dumps({'module': tpv_core.__file__, 'data': str(p.project_data_dir()), "
             "'rows': len(load_split(get_task('sst2'), 'validation')), "
             "'zoo': len(PromptStore(p.bundled_zoo_dir()).index())}))")
    got = json.loads(_run([sys.executable, "-c", probe], cwd=elsewhere, env=env).strip().splitlines()[-1])
    assert got["module"].startswith(str(site)) and got["data"] == str(site / "tpv_core" / "_data")
    assert got["rows"] == 500 and got["zoo"] > 0
    listed = json.loads(_run([sys.executable, "-m", "tpv_core", "tasks", "list", "--json"], cwd=elsewhere, env=env))
    sizes = {t["name"]: t["sizes"] for t in listed["tasks"]}
    assert sizes["sst2"] == {"train": 2000, "validation": 500, "test": 1000}


@pytest.mark.slow
def test_installed_eval_scores_the_shipped_zoo(installed):
    """No --store and no $TPV_STORE: the default store is the zoo inside the installed package."""
    _, site, elsewhere, env = installed
    out = _run([sys.executable, "-m", "tpv_core", "eval", "--backbone", "minilm-l6", "--task", "sst2", "--limit", "50"],
               cwd=elsewhere, env=env)
    assert all(f"vocab5000-s{s}-L20" in out for s in range(3)) and "accuracy" in out
