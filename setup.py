"""Build hook: a wheel (``pip install .``, not editable) carries the bundled data inside the package.

``data/tasks`` (the task subsets, with their provenance) and ``data/zoo`` (the trained prompts) are copied to
``tpv_core/_data/`` in the build folder, where `tpv_core.paths.project_data_dir` finds them. An editable install
reads ``data/`` of the checkout instead, so nothing is copied then. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = ("tasks", "zoo")


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        src = Path(__file__).resolve().parent / "data"
        dst = Path(self.build_lib) / "tpv_core" / "_data"
        for name in DATA:
            if not (src / name).is_dir():
                raise FileNotFoundError(f"{src / name} is missing: build the wheel from a full checkout")
            shutil.copytree(src / name, dst / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".*"))


setup(cmdclass={"build_py": BuildWithData})
