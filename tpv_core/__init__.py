"""Task Prompt Vectors workbench: soft prompts as vectors (Belanec et al.)."""

__version__ = "0.1.0"

from tpv_core.env import configure_openmp as _configure_openmp

_configure_openmp()  # before torch loads (tpv_core.env says why)

from tpv_core.prompts import Origin, SoftPrompt, TaskPromptVector, make_origin  # noqa: E402

__all__ = ["Origin", "SoftPrompt", "TaskPromptVector", "make_origin", "__version__"]
