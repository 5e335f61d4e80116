"""The workflow layer: what the ``tpv`` command, the app's job queue and the app's pages all do with a store,
written once.

- :mod:`.train`: plan and train prompts into a store (one retrain rule), with structured events;
- :mod:`.combination`: build, describe, save and read back combinations of task prompt vectors (marked by
  ``source == "combination"`` in their metadata and the store index);
- :mod:`.fewshot`: a few-shot request run with structured progress;
- :mod:`.analysis`: task similarity matrices per backbone and the cross-backbone geometry table.

Front-ends render the events and results; they never re-implement these steps. The paper's modules
(``prompts``, ``store``, ``training``, ...) sit below this layer and never import it.
"""
