"""Grids of independent jobs (backbones x tasks x origins x recipe, then few-shot targets x k x inits x
seeds) from a YAML plan, on local worker processes or on Ray. See `plan`, `driver`, `executors`."""

from tpv_core.grid.driver import GridReport, find_stored, job_done, run_grid
from tpv_core.grid.executors import LocalExecutor, RayExecutor, make_executor
from tpv_core.grid.plan import Job, Plan, PlanError, load_plan, parse_plan

__all__ = ["GridReport", "Job", "LocalExecutor", "Plan", "PlanError", "RayExecutor", "find_stored", "job_done",
           "load_plan", "make_executor", "parse_plan", "run_grid"]
