"""What the Streamlit app needs beyond the workflows, kept free of Streamlit so it can be tested:
the process-wide model cache and defaults (:mod:`.appstate`), the background job queue (:mod:`.jobs`)
and the UMAP warm-up (:mod:`.warmup`). The pages import these; the paper's modules never do."""
