"""Figures and exports: HTML and CSV always; PNG/SVG through kaleido + Chromium (skipped without it)."""

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from tpv_core import plots


def square(names=("a", "b", "c"), seed=0):
    rng = np.random.default_rng(seed)
    m = rng.uniform(-1, 1, (len(names), len(names)))
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1.0)
    return pd.DataFrame(m, index=list(names), columns=list(names))


def test_heatmap_hover_shows_numbers_n_and_std():
    mean = square()
    mean.iloc[0, 1] = mean.iloc[1, 0] = np.nan
    n = pd.DataFrame(3, index=mean.index, columns=mean.columns)
    std = mean.abs() / 10
    fig = plots.heatmap(mean, title="t", n=n, std=std)
    tr = fig.data[0]
    assert tr.zmin == -1 and tr.zmax == 1 and "std" in tr.hovertemplate and "n %{customdata[1]" in tr.hovertemplate
    assert tr.z[0][1] is None  # NaN cells blank
    assert tr.customdata[0][0][1] == 3
    assert tr.texttemplate
    assert plots.heatmap(mean, text=False).data[0].texttemplate is None
    grid = plots.heatmap_grid({"m1": mean, "m2": square(seed=1)}, n={"m1": n})
    assert len(grid.data) == 2 and grid.layout.coloraxis.cmin == -1


def test_projection_scatter_facets_by_backbone():
    df = pd.DataFrame({"x": [0.0, 1, 2, 3], "y": [1.0, 0, 1, 0], "backbone": ["p", "p", "q", "q"],
                       "panel": ["p", "p", "q", "q"], "task": ["a", "b", "a", "b"], "origin": ["o0", "o1", "o0", "o1"],
                       "seed": [0, 1, 0, 1], "label": ["a/o0", "b/o1", "a/o0", "b/o1"], "method": "pca"})
    fig = plots.projection_scatter(df, title="proj")
    assert {a.text for a in fig.layout.annotations} == {"p", "q"}
    assert {tr.marker.symbol for tr in fig.data if tr.legend == "legend2"} == {"circle", "diamond"}
    assert plots.projection_scatter(df.iloc[:0]).data == ()


def test_projection_scatter_two_legends_axis_titles_hover_and_highlight():
    df = pd.DataFrame({"x": [0.0, 1, 2, 3], "y": [1.0, 0, 1, 0], "backbone": "p", "panel": "p",
                       "task": ["sst2", "sst2", "trec", "trec"], "origin": ["o0", "o1", "o0", "o1"],
                       "method": "umap", "norm": [1.5, 2.0, 0.5, 0.25]})
    fig = plots.projection_scatter(df, highlight="SST")
    tasks = [tr for tr in fig.data if tr.legend == "legend"]
    origins = [tr for tr in fig.data if tr.legend == "legend2"]
    assert [t.name for t in tasks] == ["sst2", "trec"] and [o.name for o in origins] == ["o0", "o1"]
    assert fig.layout.legend2.title.text.startswith("origin") and fig.layout.legend.title.text.startswith("task")
    assert fig.layout.xaxis.title.text == "UMAP 1" and fig.layout.yaxis.title.text == "UMAP 2"
    sst2, trec = tasks
    assert list(sst2.marker.symbol) == ["circle", "diamond"]  # marker = origin inside the task's trace
    assert sst2.marker.size > trec.marker.size and trec.marker.opacity < sst2.marker.opacity
    assert "backbone" in sst2.hovertemplate and "norm" in sst2.hovertemplate
    assert list(sst2.customdata[1]) == ["sst2", "o1", "p", "2.000"]


def test_heatmap_scale_follows_the_data_and_text_only_where_it_fits():
    flat = pd.DataFrame([[0.17, 0.02], [0.02, 0.11]], index=["a", "b"], columns=["a", "b"])
    assert plots.symmetric_range(flat) == pytest.approx(0.2)
    assert plots.symmetric_range([flat, -2 * flat]) == pytest.approx(0.35)
    assert plots.symmetric_range(pd.DataFrame([[np.nan]])) == 1.0
    assert plots.cell_text_fits(8) and not plots.cell_text_fits(42)
    m = square()
    order = plots.cluster_order(m)
    assert sorted(order) == sorted(m.index)
    blocks = pd.DataFrame([[1, .0, .9, .0], [.0, 1, .0, .8], [.9, .0, 1, .0], [.0, .8, .0, 1]],
                          index=list("abcd"), columns=list("abcd"))
    got = plots.cluster_order(blocks)
    assert abs(got.index("a") - got.index("c")) == 1 and abs(got.index("b") - got.index("d")) == 1


def test_training_curve_has_loss_and_validation_axes():
    fig = plots.training_curve([(1, 0.9, None), (2, 0.7, 0.6), (3, 0.6, None), (4, 0.5, 0.7)], metric="accuracy")
    loss, val = fig.data
    assert list(loss.y) == [0.9, 0.7, 0.6, 0.5] and list(val.x) == [2, 4] and val.yaxis == "y2"
    assert fig.layout.yaxis2.title.text == "accuracy" and tuple(fig.layout.yaxis2.range) == (0, 1.02)


def test_fewshot_and_lambda_curves():
    df = pd.DataFrame({"k": [0, 5, 10, 0, 5, 10], "init": ["random"] * 3 + ["tpv"] * 3,
                       "mean": [0.3, 0.5, 0.6, 0.5, 0.6, 0.7], "std": [0.01, 0.02, 0.03] * 2,
                       "ci_low": [0.28, 0.47, 0.55, 0.48, 0.58, 0.66], "ci_high": [0.32, 0.53, 0.65, 0.52, 0.62, 0.74],
                       "n": [3] * 6})
    fig = plots.fewshot_curve(df)
    assert [tr.name for tr in fig.data] == ["random", "tpv"]
    named = plots.fewshot_curve(df.assign(target="imdb"), metric="accuracy")
    assert "imdb" in named.layout.title.text and named.layout.yaxis.title.text == "accuracy"
    assert fig.data[0].error_y.array[2] == pytest.approx(0.05) and fig.data[0].error_y.arrayminus[2] == pytest.approx(0.05)
    no_ci = plots.fewshot_curve(df.drop(columns=["ci_low", "ci_high"]))
    assert no_ci.data[1].error_y.array[0] == pytest.approx(0.01)
    table = pd.DataFrame({"lambda": [0.0, 0.5, 1.0], "score": [0.1, 0.4, 0.3], "best": [False, True, False]})
    lam = plots.lambda_curve(table)
    assert len(lam.data) == 2 and lam.data[1].x[0] == 0.5


def test_export_html_and_csv_always_work():
    fig = plots.heatmap(square())
    html = plots.export_figure(fig, "html")
    assert isinstance(html, bytes) and b"<html" in html[:200].lower() and b"plotly" in html
    small = plots.export_figure(fig, "html", include_plotlyjs="cdn")
    assert len(small) < len(html) / 10
    df = pd.DataFrame({"task": ["a", "b"], "cosine": [0.5, -0.25]})
    csv = plots.export_table(df)
    assert csv.startswith(b"task,cosine") and pd.read_csv(io.BytesIO(csv)).equals(df)
    with pytest.raises(ValueError, match="format"):
        plots.export_figure(fig, "pdf")  # type: ignore[arg-type]


def test_no_browser_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(plots, "find_browser", lambda: None)
    with pytest.raises(plots.ExportUnavailableError, match="apt-get install chromium"):
        plots.export_figure(go.Figure(), "png")
    assert not plots.static_export_available()
    files, skipped = plots.write_figures({"f": go.Figure()}, tmp_path, ["html", "png", "svg"])
    assert [f.name for f in files] == ["f.html"] and "Chromium" in skipped[0]


def test_browser_lookup_honours_env(monkeypatch, tmp_path):
    fake = tmp_path / "mychrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TPV_CHROMIUM", str(fake))
    assert plots.find_browser() == str(fake)


needs_chromium = pytest.mark.skipif(plots.find_browser() is None,
                                    reason="PNG/SVG export needs Chromium (apt-get install chromium)")


@needs_chromium
def test_png_and_svg_export_with_chromium(tmp_path):
    fig = plots.heatmap(square(), title="export")
    png = plots.export_figure(fig, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    svg = plots.export_figure(fig, "svg")
    assert b"<svg" in svg[:500]
    files, skipped = plots.write_figures({"one": fig, "two": plots.lambda_curve(
        pd.DataFrame({"lambda": [0.0, 1.0], "score": [0.2, 0.3]}))}, tmp_path, ["png", "svg"])
    assert not skipped and sorted(f.name for f in files) == ["one.png", "one.svg", "two.png", "two.svg"]


def test_long_heatmap_titles_wrap_to_the_figure_width():
    from tpv_core.plots import heatmap, wrap_title

    title = "minilm-l6: token-mean cosine of task prompt vectors (tau = P - P0) across every stored origin"
    lines = wrap_title(title, 480)
    assert len(lines) > 1 and " ".join(lines) == title and all(len(x) <= 480 / 9.5 for x in lines)
    fig = heatmap(pd.DataFrame([[1.0]], index=["a"], columns=["a"]), title=title)
    assert fig.layout.title.text.count("<br>") == len(lines) - 1
    assert wrap_title("", 480) == []


def test_projection_scatter_gives_every_task_its_own_colour():
    tasks = [f"t{i}" for i in range(21)]  # a whole zoo: more tasks than Plotly's 10 default colours
    df = pd.DataFrame({"x": range(21), "y": range(21), "backbone": "p", "task": tasks, "origin": "o0"})
    fig = plots.projection_scatter(df)
    colours = {tr.name: tr.marker.color for tr in fig.data if tr.legend != "legend2"}
    assert len(colours) == 21 and len(set(colours.values())) == 21
