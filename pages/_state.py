"""Session state that survives page switches (Streamlit drops a widget's value when its page is left).

Every page widget whose choice should be remembered takes its key from :func:`keep`::

    st.selectbox("Backbone", names, key=keep("cmb_bb", names[0], options=names))

``keep`` holds the value in a plain session dict (``_kept``) that Streamlit never cleans up, and puts it
back into the widget's key before the widget is drawn (so the widget is created *without* a ``value`` /
``index`` / ``default`` argument). :func:`snapshot` (called first by every page run) copies the widgets'
latest values into that dict while they still exist. A value that no longer fits the widget's options
(e.g. a task missing from another store) falls back to the default.

The store root also lives in the URL (``?store=...``): a reload or a shared link opens the same store.
"""

from __future__ import annotations

from typing import Any, Sequence

import streamlit as st

KEPT = "_kept"
STORE_KEY = "store_root"
STORE_PARAM = "store"
_MISSING = object()


def _kept() -> dict[str, Any]:
    return st.session_state.setdefault(KEPT, {})


def snapshot() -> None:
    """Copy the current value of every remembered widget into the kept dict (first thing in a run: the
    widgets of the page just left are still in session state then)."""
    ss, kept = st.session_state, _kept()
    for key in list(kept):
        if key in ss:
            kept[key] = ss[key]


def _fit(value: Any, default: Any, options: Sequence[Any] | None) -> Any:
    if options is None:
        return value
    allowed = list(options)
    if isinstance(value, (list, tuple)):
        return [v for v in value if v in allowed]
    return value if value in allowed else default


def keep(key: str, default: Any = None, *, options: Sequence[Any] | None = None) -> str:
    """The widget key ``key``, with its remembered value (or ``default``) set for the widget to show.

    ``default`` may be a callable (evaluated only when nothing is remembered); ``options`` (for select
    boxes, radios, multiselects) drops remembered values that are not offered any more."""
    ss, kept = st.session_state, _kept()
    if key in kept:
        value = kept[key]
    elif key in ss:  # set before the first run (tests, links)
        value = ss[key]
    else:
        value = default() if callable(default) else default
    if options is not None:
        dflt = default() if callable(default) else default
        value = _fit(value, dflt, options)
        if not isinstance(value, list) and value not in list(options) and list(options):
            value = list(options)[0]
    kept[key] = value
    ss[key] = value
    return key


def forget(key: str) -> None:
    """Drop a remembered value (the widget starts from its default on the next run)."""
    _kept().pop(key, None)
    st.session_state.pop(key, None)


def follow(key: str, new_default: Any) -> None:
    """A choice that follows ``new_default`` (e.g. "Evaluate on" follows the chosen vectors) until the user
    changes it: while the kept value still equals the last default handed out, it moves with it."""
    kept = _kept()
    auto = st.session_state.setdefault("_auto_defaults", {})
    last = auto.get(key, _MISSING)
    current = kept.get(key, _MISSING)
    if current is _MISSING or last is _MISSING or current == last:
        kept[key] = new_default
    auto[key] = new_default


def initial_store_root(default: str) -> str:
    """The store root for a new session: ``?store=`` from the URL, else the session's own, else ``default``."""
    url = st.query_params.get(STORE_PARAM)
    return url or st.session_state.get(STORE_KEY) or default


def sync_store_url(root: str, default: str) -> None:
    """Put the store root into the URL (a reload or a shared link keeps it); the default leaves no trace."""
    try:
        if root and root != default:
            if st.query_params.get(STORE_PARAM) != root:
                st.query_params[STORE_PARAM] = root
        elif STORE_PARAM in st.query_params:
            del st.query_params[STORE_PARAM]
    except Exception:  # noqa: BLE001 - the URL is a convenience; never break a page over it
        pass
