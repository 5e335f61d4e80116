"""Task Prompt Vectors workbench: the Streamlit app (``streamlit run app.py``).

A multipage app (``st.navigation``); each page under ``pages/`` is a thin layer of widgets and
figures over ``tpv_core``. The store root defaults to ``$TPV_STORE`` or ``data/zoo`` next to this file.
"""

import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:  # `pages._ui` is imported by every page
    sys.path.insert(0, str(APP_DIR))

import streamlit as st  # noqa: E402

from pages import _ui as ui  # noqa: E402

st.set_page_config(page_title="Task Prompt Vectors", page_icon=":material/hub:", layout="wide")
ui.umap_warmup()  # UMAP's first fit per process is slow: warm it in the background at start

PAGES = [
    st.Page("pages/library.py", title="Library", icon=":material/inventory_2:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/similarity.py", title="Similarity", icon=":material/grid_on:"),
    st.Page("pages/projection.py", title="Projection", icon=":material/scatter_plot:"),
    st.Page("pages/combine.py", title="Combine", icon=":material/tune:"),
    st.Page("pages/fewshot.py", title="Few-shot", icon=":material/trending_up:"),
]
page = st.navigation(PAGES)
# every page starts with ui.page_setup() (session defaults, the sidebar): it runs the same whether the
# page is reached through this script or directly (AppTest runs page files directly after a switch_page)
page.run()
