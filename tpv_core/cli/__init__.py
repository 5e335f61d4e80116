"""The ``tpv`` command: batch work on the prompt store for people at a terminal.

Each command group lives in its own module with a ``register(subparsers)`` function; ``main`` wires
them up. Errors a user can act on are printed as one line (``tpv: error: ...``) with exit code 2, never
as a traceback (``TPV_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from typing import Sequence

GROUPS = ("store", "models", "tasks", "train", "evaluate", "probe", "analysis", "combine", "experiment", "grid")


class CLIError(Exception):
    """An error with a message meant for the person at the terminal."""


def build_parser() -> argparse.ArgumentParser:
    from tpv_core import __version__

    parser = argparse.ArgumentParser(
        prog="tpv",
        description="Task Prompt Vectors workbench: tune, store, compare and combine soft prompts.",
    )
    parser.add_argument("--version", action="version", version=f"tpv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        module = importlib.import_module(f"tpv_core.cli.{group}_cmd")
        module.register(sub)
    return parser


def _notes_from_the_library(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings the workbench raises for the user (a choice it made, a file it skipped) print as one
    ``note:`` line; everyone else's keep Python's format (file, line, source)."""
    if category is UserWarning and os.path.abspath(filename).startswith(_PACKAGE):
        print(f"note: {message}", file=file or sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_python_showwarning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shown, warnings.showwarning = warnings.showwarning, _notes_from_the_library
    try:
        from tpv_core.cli.common import resolve_store

        resolve_store(args)
        with _data_parallel(args):
            result = args.func(args)
    except KeyboardInterrupt:
        print("tpv: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, KeyError, FileNotFoundError, FileExistsError, RuntimeError, ImportError) as exc:
        if os.environ.get("TPV_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"tpv: error: {msg}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown
    return int(result or 0)


@contextlib.contextmanager
def _data_parallel(args: argparse.Namespace):
    """Under ``torchrun --nproc_per_node N``: start the process group before any model loads (each rank on
    the device of its LOCAL_RANK, `tpv_core.distributed.setup`), let rank 0 alone print, and end with a
    barrier and a clean shutdown. Without a launcher: nothing."""
    from tpv_core import distributed

    if distributed.launcher_env()[1] == 1:
        yield
        return
    ctx = distributed.setup(getattr(args, "device", None))
    quiet = open(os.devnull, "w") if not ctx.is_main else None
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            yield
    finally:
        if quiet:
            quiet.close()
        distributed.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
