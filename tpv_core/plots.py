"""Plotly figures for the workbench, and their export (HTML, CSV always; PNG, SVG through kaleido + Chromium).

Static export uses kaleido 1.x, which drives a Chrome/Chromium through the DevTools pipe. We look for the
browser ourselves (``TPV_CHROMIUM`` or ``BROWSER_PATH``, then ``chromium``/``chromium-browser``/
``google-chrome`` on PATH, then /usr/bin/chromium) and hand its path to kaleido. kaleido already starts
it with ``--headless --no-sandbox --disable-gpu --no-first-run --disable-component-update
--disable-sync`` (no sandbox is needed when running as root in a container), and Debian's
``/usr/bin/chromium`` launcher adds ``--disable-background-networking``. MathJax is disabled (kaleido
would otherwise fetch it from a CDN, and these machines have no network). When no browser is found,
:class:`ExportUnavailableError` says so; HTML and CSV never need one.

Longer than 350 lines because the figures and their export share one namespace: the app and its tests
reach the browser lookup as ``plots.find_browser``. The export half (from ``find_browser`` on, about
150 lines) is the part to move into its own module when those callers move with it.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
NO_BROWSER_MSG = "PNG/SVG export needs Chromium: apt-get install chromium; HTML and CSV work without it"
COSINE_SCALE = "RdBu_r"  # blue (-1) .. white (0) .. red (+1)


class ExportUnavailableError(RuntimeError):
    """A static (PNG/SVG) export that cannot be made here: no browser, no kaleido, or the browser failed."""


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------
def _none_nan(a: np.ndarray) -> list:
    return [[None if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in row] for row in a.tolist()]


def _heatmap_trace(matrix_df: pd.DataFrame, zmin: float | None, zmax: float | None, text: bool,
                   n: pd.DataFrame | None, std: pd.DataFrame | None, value_name: str, colorscale: str,
                   coloraxis: str | None = None) -> go.Heatmap:
    z = matrix_df.to_numpy(dtype=float)
    x = [str(c) for c in matrix_df.columns]
    y = [str(i) for i in matrix_df.index]
    hover = f"%{{y}} · %{{x}}<br>{value_name} %{{z:.4f}}"
    custom = None
    extras = []
    if std is not None:
        extras.append(std.reindex(index=matrix_df.index, columns=matrix_df.columns).to_numpy(dtype=float))
        hover += f"<br>std %{{customdata[{len(extras) - 1}]:.4f}}"
    if n is not None:
        extras.append(n.reindex(index=matrix_df.index, columns=matrix_df.columns).to_numpy(dtype=float))
        hover += f"<br>n %{{customdata[{len(extras) - 1}]:.0f}}"
    if extras:
        custom = [[[None if math.isnan(v) else v for v in cell] for cell in row]
                  for row in np.stack(extras, axis=-1).tolist()]
    kwargs = dict(z=_none_nan(z), x=x, y=y, customdata=custom, hovertemplate=hover + "<extra></extra>",
                  hoverongaps=False)
    if coloraxis:
        kwargs["coloraxis"] = coloraxis
    else:
        kwargs.update(zmin=zmin, zmax=zmax, colorscale=colorscale, zmid=0 if (zmin or 0) < 0 < (zmax or 0) else None,
                      colorbar=dict(title=value_name))
    if text:
        kwargs.update(texttemplate="%{z:.2f}", textfont=dict(size=10))
    return go.Heatmap(**kwargs)


def wrap_title(title: str, width_px: int, px_per_char: float = 9.5) -> list[str]:
    """The title cut at word boundaries into lines that fit ``width_px`` (static exports clip long titles)."""
    import textwrap

    if not title:
        return []
    return textwrap.wrap(title, max(20, int(width_px / px_per_char))) or [title]


def heatmap(
    matrix_df: pd.DataFrame,
    title: str = "",
    zmin: float | None = -1.0,
    zmax: float | None = 1.0,
    text: bool = True,
    n: pd.DataFrame | None = None,
    std: pd.DataFrame | None = None,
    value_name: str = "cosine",
    colorscale: str = COSINE_SCALE,
) -> go.Figure:
    """A square (or any) matrix as a heatmap, first row at the top; the hover shows the value and, when
    given, ``std`` and ``n`` (DataFrames aligned with ``matrix_df``). NaN cells stay blank."""
    fig = go.Figure(_heatmap_trace(matrix_df, zmin, zmax, text, n, std, value_name, colorscale))
    side = max(360, 60 + 42 * len(matrix_df.index))
    width = max(480, side + 140)
    lines = wrap_title(title, width)
    fig.update_layout(title="<br>".join(lines), width=width, height=side + 60 + 22 * (len(lines) - 1),
                      template="plotly_white", margin=dict(l=10, r=10, t=28 + 22 * len(lines) if title else 20, b=10))
    fig.update_yaxes(autorange="reversed", title=matrix_df.index.name or None)
    fig.update_xaxes(title=matrix_df.columns.name or None, tickangle=-45 if len(matrix_df.columns) > 6 else 0)
    return fig


def heatmap_grid(
    matrices: Mapping[str, pd.DataFrame],
    title: str = "",
    zmin: float = -1.0,
    zmax: float = 1.0,
    text: bool = True,
    n: Mapping[str, pd.DataFrame] | None = None,
    std: Mapping[str, pd.DataFrame] | None = None,
    value_name: str = "cosine",
    colorscale: str = COSINE_SCALE,
) -> go.Figure:
    """Heatmaps side by side (e.g. one per backbone) on one shared colour scale."""
    from plotly.subplots import make_subplots

    names = list(matrices)
    if not names:
        raise ValueError("heatmap_grid needs at least one matrix")
    # widths in proportion to the task counts: a cell is as wide in every panel
    widths = [max(len(matrices[n_].columns), 1) for n_ in names]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.12,
                        column_widths=[w / sum(widths) for w in widths])
    for j, name in enumerate(names, start=1):
        fig.add_trace(_heatmap_trace(matrices[name], zmin, zmax, text, (n or {}).get(name), (std or {}).get(name),
                                     value_name, colorscale, coloraxis="coloraxis"), row=1, col=j)
        fig.update_yaxes(autorange="reversed", row=1, col=j)
    side = max(360, 60 + 42 * max(len(m.index) for m in matrices.values()))
    fig.update_layout(title=title, coloraxis=dict(colorscale=colorscale, cmin=zmin, cmax=zmax,
                                                  colorbar=dict(title=value_name)),
                      width=max(480, side * len(names) + 160), height=side + 80, template="plotly_white")
    return fig


ORIGIN_SYMBOLS = ("circle", "diamond", "square", "x", "triangle-up", "star", "cross", "triangle-down", "pentagon",
                  "hexagon", "star-diamond", "hourglass")
TEXT_MIN_CELL_PX = 30  # below this a cell cannot hold "-0.12" legibly: numbers go, the hover keeps them
FIGURE_WIDTH_PX = 1000  # the width a figure gets in the app's main column at a 1440-px window (sizing guess)


def task_palette(n: int) -> list[str]:
    """``n`` distinct colours: Plotly's Dark24 (24 colours that stay apart), then Light24 beyond 24 tasks."""
    import plotly.express as px

    base = list(px.colors.qualitative.Dark24) + list(px.colors.qualitative.Light24)
    return [base[i % len(base)] for i in range(n)]


def symmetric_range(values: "np.ndarray | Sequence[pd.DataFrame]", floor: float = 0.05) -> float:
    """The colour limit of a cosine heatmap that follows the data: max |value| (NaN ignored), rounded up to
    0.05, at least ``floor`` and at most 1; the scale is then [-lim, lim], white at 0."""
    arrays = [np.asarray(v.to_numpy(dtype=float) if isinstance(v, pd.DataFrame) else v, dtype=float).ravel()
              for v in (values if isinstance(values, (list, tuple)) else [values])]
    flat = np.concatenate(arrays) if arrays else np.array([])
    flat = flat[np.isfinite(flat)]
    if not flat.size:
        return 1.0
    lim = math.ceil(float(np.abs(flat).max()) / 0.05 - 1e-9) * 0.05
    return float(min(1.0, max(floor, round(lim, 2))))


def cell_text_fits(n_columns: int, width_px: int = FIGURE_WIDTH_PX, min_cell_px: int = TEXT_MIN_CELL_PX) -> bool:
    """Whether numbers fit into the cells of ``n_columns`` heatmap columns drawn across ``width_px``."""
    return n_columns > 0 and (width_px - 200) / n_columns >= min_cell_px


def cluster_order(matrix_df: pd.DataFrame) -> list[str]:
    """Row/column labels of a square similarity matrix in the leaf order of an average-linkage clustering
    on 1 - similarity (NaN counted as 0 similarity), so similar tasks sit next to each other."""
    if len(matrix_df) < 3:
        return list(matrix_df.index)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    m = matrix_df.to_numpy(dtype=float)
    m = np.nan_to_num((m + m.T) / 2, nan=0.0)
    dist = np.clip(1.0 - m, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    order = leaves_list(linkage(squareform(dist, checks=False), method="average"))
    return [matrix_df.index[i] for i in order]


def projection_scatter(df: pd.DataFrame, title: str = "", highlight: str | None = None) -> go.Figure:
    """2-D projection (from :func:`tpv_core.projection.project`): colour = task (24+ distinct colours),
    marker = origin, with two legends (tasks; origins), one panel per backbone with its own axes
    (projections of different models share no coordinates), axis titles from the method. The hover names
    task, origin, backbone and, when the table has a ``norm`` column, the vector's norm. ``highlight``: tasks
    whose name contains this text are drawn large, the others faded."""
    from plotly.subplots import make_subplots

    if df.empty:
        fig = go.Figure()
        fig.update_layout(title=title or "nothing to project", template="plotly_white")
        return fig
    facet = "panel" if "panel" in df.columns else "backbone"
    panels = list(dict.fromkeys(df[facet]))
    n_cols = min(len(panels), 2)
    n_rows = math.ceil(len(panels) / n_cols)
    tasks = list(dict.fromkeys(sorted(df["task"].astype(str))))
    origins = list(dict.fromkeys(sorted(df["origin"].astype(str))))
    colour = dict(zip(tasks, task_palette(len(tasks)), strict=True))
    symbol = {o: ORIGIN_SYMBOLS[i % len(ORIGIN_SYMBOLS)] for i, o in enumerate(origins)}
    needle = (highlight or "").strip().lower()
    hit = {t: bool(needle) and needle in t.lower() for t in tasks}
    method = str(df["method"].iloc[0]).upper() if "method" in df.columns and df["method"].nunique() == 1 else "dim"
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=[str(p) for p in panels],
                        horizontal_spacing=0.08, vertical_spacing=0.12)
    backbone_col = "backbone" if "backbone" in df.columns else facet
    has_norm = "norm" in df.columns
    for k, panel in enumerate(panels):
        row, col = k // n_cols + 1, k % n_cols + 1
        part = df[df[facet] == panel]
        for task in tasks:
            pts = part[part["task"].astype(str) == task]
            if pts.empty:
                continue
            custom = np.stack([pts["task"].astype(str), pts["origin"].astype(str), pts[backbone_col].astype(str),
                               pts["norm"].map(lambda v: f"{v:.3f}") if has_norm else ["–"] * len(pts)], axis=-1)
            faded = bool(needle) and not hit[task]
            fig.add_trace(go.Scatter(
                x=pts["x"], y=pts["y"], mode="markers", name=task, legendgroup=task, legend="legend",
                showlegend=task not in {tr.name for tr in fig.data if tr.legend in (None, "legend")},
                marker=dict(color=colour[task], symbol=[symbol[str(o)] for o in pts["origin"]],
                            size=15 if hit[task] else 10, opacity=0.15 if faded else 0.95,
                            line=dict(width=1.5 if hit[task] else 0.5, color="black" if hit[task] else "white")),
                customdata=custom,
                hovertemplate="<b>%{customdata[0]}</b><br>origin %{customdata[1]}<br>backbone %{customdata[2]}"
                              "<br>norm %{customdata[3]}<extra></extra>",
            ), row=row, col=col)
        fig.update_xaxes(title_text=f"{method} 1", row=row, col=col)
        fig.update_yaxes(title_text=f"{method} 2", row=row, col=col)
    for o in origins:  # the second legend: marker shape = origin (grey, so it is not read as a task colour)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=o, legend="legend2", legendgroup=f"o:{o}",
                                 marker=dict(color="#666", symbol=symbol[o], size=10), hoverinfo="skip"))
    height = max(500, 440 * n_rows + 120, 22 * len(tasks) + 200)
    fig.update_layout(
        title=title, template="plotly_white", height=height,
        legend=dict(title=dict(text="task (colour)"), x=1.02, y=1, yanchor="top", tracegroupgap=0),
        legend2=dict(title=dict(text="origin (marker)"), orientation="h", x=0, y=-0.12 - 0.04 * (n_rows > 1),
                     yanchor="top"),
        margin=dict(l=10, r=10, t=60 if title else 30, b=110),
    )
    return fig


def training_curve(points: Sequence[tuple[int, float, float | None]], title: str = "",
                   metric: str = "validation score") -> go.Figure:
    """Training loss per step (left axis) and the periodic validation score (right axis, markers) of one
    training run: ``points`` are (step, loss, val or None)."""
    steps = [p[0] for p in points]
    fig = go.Figure(go.Scatter(x=steps, y=[p[1] for p in points], mode="lines", name="training loss",
                               line=dict(color="#1f77b4"), hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>"))
    val = [(p[0], p[2]) for p in points if p[2] is not None]
    if val:
        fig.add_trace(go.Scatter(x=[v[0] for v in val], y=[v[1] for v in val], mode="lines+markers", name=metric,
                                 yaxis="y2", line=dict(color="#d62728", dash="dot"), marker=dict(size=8),
                                 hovertemplate=f"step %{{x}}<br>{metric} %{{y:.4f}}<extra></extra>"))
    fig.update_layout(title=title, template="plotly_white", height=300, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis_title="step", yaxis=dict(title="training loss"),
                      yaxis2=dict(title=metric, overlaying="y", side="right", showgrid=False,
                                  # scores in [0, 1] on a [0, 1] axis (one early point would otherwise float)
                                  range=[0, 1.02] if val and all(0 <= v[1] <= 1 for v in val) else None),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    return fig


def _errors(part: pd.DataFrame) -> dict | None:
    if {"ci_low", "ci_high"} <= set(part.columns) and part[["ci_low", "ci_high"]].notna().all().all():
        return dict(type="data", symmetric=False, array=(part["ci_high"] - part["mean"]).tolist(),
                    arrayminus=(part["mean"] - part["ci_low"]).tolist(), thickness=1.2, width=4)
    if "std" in part.columns and part["std"].notna().any():
        return dict(type="data", array=part["std"].fillna(0).tolist(), thickness=1.2, width=4)
    return None


def fewshot_curve(df: pd.DataFrame, title: str = "", metric: str = "score") -> go.Figure:
    """Score against k (shots) per initialisation, with error bars: the 95% CI (``ci_low``, ``ci_high``)
    when present, else the std. Columns: k, init, mean (+ std, ci_low, ci_high, n)."""
    fig = go.Figure()
    ks: list = []
    for init, part in df.groupby("init", sort=False):
        part = part.sort_values("k")
        ks.extend(part["k"].tolist())
        custom = part[["n"]].to_numpy() if "n" in part.columns else None
        hover = f"{init}<br>k=%{{x}}<br>{metric} %{{y:.4f}}" + ("<br>n=%{customdata[0]}" if custom is not None else "")
        fig.add_trace(go.Scatter(x=part["k"], y=part["mean"], mode="lines+markers", name=str(init),
                                 error_y=_errors(part), customdata=custom, hovertemplate=hover + "<extra></extra>"))
    ticks = sorted(set(ks))
    if not title and "target" in df.columns and df["target"].nunique() == 1:
        title = (f"Few-shot {df['target'].iloc[0]}: {metric} against k "
                 "(95% intervals over the runs: origins x data seeds)")
    fig.update_layout(title=title, template="plotly_white", xaxis_title="k (training examples)",
                      yaxis_title=metric, legend_title="initialisation", width=760, height=480)
    if ticks:
        fig.update_xaxes(tickmode="array", tickvals=ticks)
    return fig


def lambda_curve(table: pd.DataFrame, title: str = "", best: float | None = None) -> go.Figure:
    """Validation score against lambda (from :func:`tpv_core.combine.lambda_search`), the best marked."""
    t = table.sort_values("lambda")
    fig = go.Figure(go.Scatter(x=t["lambda"], y=t["score"], mode="lines+markers", name="score",
                               hovertemplate="lambda %{x:g}<br>score %{y:.4f}<extra></extra>"))
    if best is None and "best" in t.columns and t["best"].any():
        best = float(t.loc[t["best"], "lambda"].iloc[0])
    if best is None and t["score"].notna().any():
        best = float(t.loc[t["score"].idxmax(), "lambda"])
    if best is not None:
        y = t.loc[np.isclose(t["lambda"], best), "score"]
        fig.add_trace(go.Scatter(x=[best], y=[y.iloc[0] if len(y) else None], mode="markers", name=f"best λ={best:g}",
                                 marker=dict(size=14, symbol="star", color="crimson")))
    fig.update_layout(title=title, template="plotly_white", xaxis_title="λ", yaxis_title="validation score",
                      width=640, height=420)
    return fig


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def find_browser() -> str | None:
    """Path of a Chrome/Chromium executable kaleido can drive, or None."""
    candidates: list[str | None] = [os.environ.get("TPV_CHROMIUM"), os.environ.get("BROWSER_PATH")]
    candidates += [shutil.which(name) for name in BROWSER_NAMES]
    candidates += list(BROWSER_PATHS)
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def static_export_available() -> bool:
    """Whether PNG/SVG export can be attempted here (a browser and kaleido are present)."""
    if find_browser() is None:
        return False
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return True


def _run_async(coro_fn, *args):
    """Run ``coro_fn(*args)`` on a fresh event loop in a worker thread (safe inside a running loop)."""
    import asyncio
    import threading

    box: dict = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro_fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="tpv-kaleido", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def render_static(
    figs: Sequence[go.Figure],
    formats: Sequence[str] = ("png",),
    width: int | None = None,
    height: int | None = None,
    scale: float = 2.0,
    timeout: float = 90.0,
) -> list[dict[str, bytes]]:
    """PNG/SVG bytes of several figures rendered in one browser session (starting Chromium costs ~2 s,
    each figure then ~0.2 s). Returns one {format: bytes} per figure; raises :class:`ExportUnavailableError`
    when no browser (or kaleido) is present or the browser fails."""
    formats = [f.lower() for f in formats]
    bad = [f for f in formats if f not in ("png", "svg")]
    if bad:
        raise ValueError(f"render_static makes png and svg only, not {', '.join(bad)}")
    if not figs or not formats:
        return [{} for _ in figs]
    browser = find_browser()
    if browser is None:
        raise ExportUnavailableError(NO_BROWSER_MSG)
    try:
        import kaleido
    except ImportError:
        raise ExportUnavailableError("PNG/SVG export needs kaleido (pip install kaleido==1.5.0); "
                                     "HTML and CSV work without it") from None

    def opts_for(fmt: str) -> dict:
        opts: dict = {"format": fmt}
        if width is not None:
            opts["width"] = int(width)
        if height is not None:
            opts["height"] = int(height)
        if fmt == "png":
            opts["scale"] = float(scale)
        return opts

    async def render() -> list[dict[str, bytes]]:
        out = []
        async with kaleido.Kaleido(path=browser, mathjax=False, timeout=timeout) as k:
            for fig in figs:
                got = {}
                for fmt in formats:
                    data = await k.calc_fig(fig, opts=opts_for(fmt))
                    got[fmt] = data.encode("utf-8") if isinstance(data, str) else bytes(data)
                out.append(got)
        return out

    try:
        return _run_async(render)
    except Exception as exc:  # noqa: BLE001 - kaleido/choreographer raise many types; the user needs one message
        raise ExportUnavailableError(f"{'/'.join(f.upper() for f in formats)} export failed with the browser "
                                     f"{browser}: {type(exc).__name__}: {exc}; HTML and CSV work without it") from exc


def export_figure(
    fig: go.Figure,
    fmt: Literal["png", "svg", "html"],
    width: int | None = None,
    height: int | None = None,
    scale: float = 2.0,
    include_plotlyjs: bool | str = True,
    timeout: float = 90.0,
) -> bytes:
    """The figure as bytes. ``html`` is self-contained (plotly.js inlined, works offline; pass
    ``include_plotlyjs="cdn"`` for a small file) and always works; ``png`` (at ``scale`` x the layout size)
    and ``svg`` need Chromium and raise :class:`ExportUnavailableError` when it is missing."""
    fmt = fmt.lower()  # type: ignore[assignment]
    if fmt == "html":
        return fig.to_html(include_plotlyjs=include_plotlyjs, full_html=True).encode("utf-8")
    if fmt not in ("png", "svg"):
        raise ValueError(f"unknown figure format {fmt!r}; choose png, svg or html")
    return render_static([fig], [fmt], width=width, height=height, scale=scale, timeout=timeout)[0][fmt]


def export_table(df: pd.DataFrame, index: bool = False) -> bytes:
    """A DataFrame as UTF-8 CSV bytes."""
    return df.to_csv(index=index).encode("utf-8")


def write_figures(figs: Mapping[str, go.Figure], out_dir: str | Path, formats: Sequence[str] = ("html", "png")
                  ) -> tuple[list[Path], list[str]]:
    """Write ``<stem>.<fmt>`` for each figure and format into ``out_dir`` (PNG/SVG in one browser session).
    Returns (files written, messages for what could not be made, e.g. PNG without Chromium)."""
    from tpv_core.atomic import atomic_write_bytes

    out_dir = Path(out_dir)
    files: list[Path] = []
    skipped: list[str] = []
    for fmt in formats:
        if fmt not in ("html", "png", "svg"):
            raise ValueError(f"unknown figure format {fmt!r}; choose html, png or svg")
    if "html" in formats:
        for stem, fig in figs.items():
            files.append(atomic_write_bytes(out_dir / f"{stem}.html", export_figure(fig, "html")))
    static = [f for f in formats if f in ("png", "svg")]
    if static and figs:
        try:
            rendered = render_static(list(figs.values()), static)
        except ExportUnavailableError as exc:
            skipped.append(f"{'/'.join(f.upper() for f in static)}: {exc}")
        else:
            for stem, got in zip(figs, rendered):
                for fmt in static:
                    files.append(atomic_write_bytes(out_dir / f"{stem}.{fmt}", got[fmt]))
    return files, skipped
