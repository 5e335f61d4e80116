"""Shared by the AppTest modules: where the app is, and opening one of its pages on a store."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
TIMEOUT = 180


def open_page(root, page: str | None = None, **state):
    """Run the app on store ``root`` with ``state`` in the session, then switch to ``pages/<page>.py``."""
    from streamlit.testing.v1 import AppTest

    if str(ROOT) not in sys.path:  # the pages import `pages._ui`
        sys.path.insert(0, str(ROOT))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["store_root"] = str(root)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at
