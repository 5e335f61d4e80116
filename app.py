"""Task Prompt Vectors workbench: Streamlit app (``streamlit run app.py``)."""

from pathlib import Path

import streamlit as st

from tpv_core.store import PromptStore

DEFAULT_ROOT = Path(__file__).parent / "data" / "zoo"

st.set_page_config(page_title="Task Prompt Vectors", layout="wide")
st.title("Task Prompt Vectors workbench")
root = st.text_input("Store root", value=str(DEFAULT_ROOT))
errors: list[str] = []
df = PromptStore(root).index(errors=errors)
if df.empty:
    st.info(f"No prompts in {root} yet. Train some with `tpv train`.")
else:
    st.dataframe(df.drop(columns=["path"]), hide_index=True)
for err in errors:
    st.warning(err)
