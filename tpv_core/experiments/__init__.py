"""The paper's three experiments, a negation check and a length check, each a function writing tidy CSV tables and figures.

* :mod:`cross_origin` (Table 1): P0(o1) + tau(o2) for every origin pair; original vs mixed.
* :mod:`addition` (Fig. 2): P0 + lambda * (tau_a + tau_b) for task pairs (or larger sets) of one origin, lambda on
  validation; plain sum as in the paper, or TIES / DARE merges of the same vectors.
* :mod:`negation` (not in the paper): P0 + tau_c - coef * tau_t; does negating t hurt t and spare c?
* :mod:`fewshot` (Fig. 3): initialise few-shot prompt tuning of a target task from a random origin, a
  single source prompt (SPoT), a multi-task prompt, or the sum of the sources' task prompt vectors; runs
  pair up by (origin, data seed), compared by :mod:`paired` tests.
* :mod:`length` (not in the paper): the sources' prompts and their sum on a target's inputs cut to several
  lengths (why sentence-level sentiment vectors do or do not carry to long reviews).

Every run is resumable: finished rows are kept in ``<out>/<name>_runs.csv`` and skipped next time.
"""

from tpv_core.experiments.common import ExperimentResult, ResultsLog, mean_ci

__all__ = ["ExperimentResult", "ResultsLog", "mean_ci"]
