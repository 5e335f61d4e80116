"""Job functions for the grid tests: importable by spawned local workers and by Ray workers (PYTHONPATH)."""

import os
from pathlib import Path

import backbone_fixtures  # noqa: F401  (registers test-tiny-t5 in every worker process that imports this module)
from tpv_core.grid.worker import run_job


def run_job_with_test_models(spec):
    """``run_job`` in a worker that knows the test-only models."""
    return run_job(spec)


def flaky_run_job(spec):
    """``run_job``, except: the job named by TPV_TEST_FAIL_ONCE fails on its first attempt (a marker file in
    TPV_TEST_MARKS remembers it across processes), and the one named by TPV_TEST_FAIL_ALWAYS always fails."""
    if spec["id"] == os.environ.get("TPV_TEST_FAIL_ALWAYS"):
        raise RuntimeError("this job always fails")
    if spec["id"] == os.environ.get("TPV_TEST_FAIL_ONCE"):
        marker = Path(os.environ["TPV_TEST_MARKS"]) / spec["id"].replace("/", "_")
        if not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError("this job fails on its first attempt")
    return run_job(spec)
