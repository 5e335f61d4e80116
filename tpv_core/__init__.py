"""Task Prompt Vectors workbench: soft prompts as vectors (Belanec et al.)."""

__version__ = "0.1.0"

from tpv_core.env import configure_openmp as _configure_openmp

_configure_openmp()  # before torch loads (tpv_core.env says why)

__all__ = ["Origin", "SoftPrompt", "TaskPromptVector", "make_origin", "__version__"]


def __getattr__(name: str):
    """``from tpv_core import SoftPrompt`` etc. load torch on first use, not on ``import tpv_core``: the app
    lists a store (headers only) before any tensor is needed (launch to the first Library table)."""
    if name in ("Origin", "SoftPrompt", "TaskPromptVector", "make_origin"):
        from tpv_core import prompts

        return getattr(prompts, name)
    raise AttributeError(f"module 'tpv_core' has no attribute {name!r}")
