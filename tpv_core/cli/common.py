"""Small helpers shared by the CLI command modules."""

from __future__ import annotations

import pandas as pd


def print_table(df: pd.DataFrame, floatfmt: str = "{:.4f}") -> None:
    """Print a DataFrame as an aligned plain-text table."""
    if df.empty:
        print("(empty)")
        return
    cells = [[str(c) for c in df.columns]]
    for row in df.itertuples(index=False):
        cells.append([floatfmt.format(v) if isinstance(v, float) else str(v) for v in row])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for i, r in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
