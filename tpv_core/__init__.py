"""Task Prompt Vectors workbench: soft prompts as vectors (Belanec et al.)."""

__version__ = "0.1.0"

import os as _os

# Before torch loads: OpenMP threads that spin while waiting make torch ~10x slower as soon as another
# process wants the same cores (measured on the 2-core machine); passive waiting costs nothing alone.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tpv_core.prompts import Origin, SoftPrompt, TaskPromptVector, make_origin  # noqa: E402

__all__ = ["Origin", "SoftPrompt", "TaskPromptVector", "make_origin", "__version__"]
