"""The figures: properties a reader relies on, asserted on the layout and data plotly receives, and checked in a real
browser (Debian's chromium) at phone and desktop widths, with screenshots in test-output/plots-*.png."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from sdviz import plots, results
from sdviz.labels import label, step_text
from sdviz.ratings import BINDER_ATTRIBUTES, BINDER_DOMAINS
from sdviz.report import HEADINGS, report_figures, report_html, report_items

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
GROUPS = {a: d for d, attrs in BINDER_DOMAINS.items() for a in attrs}


def _bars(orientation="v", note=None):
    """Three series on Binder's 65 attributes: CLIP and UNet with reliabilities, and human ratings."""
    rng = np.random.default_rng(0)
    clip, unet, human = rng.uniform(0.5, 5.5, 65), rng.uniform(0.5, 5.5, 65), rng.uniform(0, 6, 65)
    unet[[2, 30]] = [7.4, 6.2]  # above the scale
    unet[[5]] = [-1.3]  # below it
    rel = {"CLIP": rng.uniform(-0.2, 0.6, 65), "UNet": rng.uniform(-0.2, 0.6, 65)}
    series = {"CLIP": clip, "UNet": unet, "human": human}
    fig = plots.attribute_bars(BINDER_ATTRIBUTES, GROUPS, series, rel, title="a photo of a dog", orientation=orientation, note=note)
    return fig, series, rel


def _no_webgl(fig: go.Figure) -> None:
    assert not any(t.type in ("scattergl", "heatmapgl") for t in fig.data), "WebGL contexts leak on remount in Gradio"


def test_attribute_bars_name_domains_fade_unreliable_probes_and_mark_values_off_the_scale():
    fig, series, rel = _bars(note="no human ratings for 'hammer'")
    _no_webgl(fig)
    bars = [t for t in fig.data if t.type == "bar" and t.x is not None and len(t.x) == 65]
    assert [t.name for t in bars] == ["CLIP", "UNet", "human ratings"]
    # full attribute names, no "(Vision)" suffix: the band names the domain
    assert list(fig.layout.xaxis.ticktext) == BINDER_ATTRIBUTES and not any("(" in t for t in fig.layout.xaxis.ticktext)
    # one coloured band per domain, its name above it
    bands = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(bands) == 14 and len({s.fillcolor for s in bands}) == 14
    spans = [(s.x0, s.x1) for s in bands]
    assert spans[0] == (-0.5, 14.5) and spans[-1] == (62.5, 64.5)  # Vision: 15 attributes; Attention: the last 2
    texts = [a.text for a in fig.layout.annotations]
    assert set(BINDER_DOMAINS) <= set(texts) and fig.layout.legend.title.text == "no human ratings for 'hammer'"  # plotly shows &#x27; literally
    domains = [a for a in fig.layout.annotations if a.text in BINDER_DOMAINS]
    assert all(a.yref == "y" and a.y > 6.5 for a in domains)  # inside the band, above the 0-6 scale and the off-scale marks
    # unreliable probes faded, with a legend entry saying so; human ratings never faded
    for t, name in zip(bars, ["CLIP", "UNet"]):
        assert list(t.marker.opacity) == [0.35 if r < 0.1 else 1.0 for r in rel[name]]
    assert set(bars[2].marker.opacity) == {1.0}
    assert any(t.name.startswith("faded: unreliable probe (cross-validated r < 0.1)") for t in fig.data)
    # off the 0-6 scale: the bar stops at the edge and a triangle marks it; hover keeps the true value
    unet = bars[1]
    assert max(unet.y) == pytest.approx(6.35) and min(unet.y) == pytest.approx(-0.35)
    assert [c[0] for c in unet.customdata][2] == pytest.approx(7.4)
    marks = next(t for t in fig.data if t.type == "scatter")
    assert "off the 0–6 scale" in marks.name and len(marks.x) == 3
    assert sorted(marks.text) == ["-1.3", "6.2", "7.4"] and sorted(marks.marker.symbol) == ["triangle-down", "triangle-up", "triangle-up"]
    # the legend hangs under the title, above the plot area (plotly pushes the plot down when it wraps), never over x labels
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.yref == "container" and legend.yanchor == "top"
    assert legend.y == pytest.approx(1 - plots.TITLE_PX / fig.layout.height) and fig.layout.margin.autoexpand is not False
    assert fig.layout.xaxis.tickangle == -60 and fig.layout.margin.b >= 100


def test_attribute_bars_for_phones_and_domain_means():
    fig, _, _ = _bars(orientation="h")
    bars = [t for t in fig.data if t.type == "bar" and t.y is not None and len(t.y) == 65]
    assert all(t.orientation == "h" for t in bars) and list(fig.layout.yaxis.ticktext) == BINDER_ATTRIBUTES
    assert fig.layout.yaxis.autorange == "reversed"  # Vision first, at the top
    assert fig.layout.height >= 65 * 16  # one readable row per attribute
    marks = next(t for t in fig.data if t.type == "scatter")
    assert set(marks.marker.symbol) == {"triangle-right", "triangle-left"}
    assert sorted(marks.text) == ["", "6.2", "7.4"]  # no text over the attribute names at the left
    means = plots.attribute_bars(BINDER_ATTRIBUTES, GROUPS, _bars()[1], domain_means=True)
    bars = [t for t in means.data if t.type == "bar" and t.x is not None and len(t.x) == 14]
    assert list(means.layout.xaxis.ticktext) == list(BINDER_DOMAINS) and len(bars) == 3
    vision = [i for i, a in enumerate(BINDER_ATTRIBUTES) if GROUPS[a] == "Vision"]
    assert bars[2].customdata[0][0] == pytest.approx(np.mean(_bars()[1]["human"][vision]))


def _map_data(n=60, steps=4):
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(n)]
    supers = [["artifact", "living object", "event"][i % 3] for i in range(n)]
    cats = [f"{s} {i % 2}" for i, s in enumerate(supers)]
    coords = np.cumsum(rng.normal(size=(steps, n, 2)), axis=0)
    return coords, words, cats, supers


def test_embedding_map_colours_super_categories_and_labels_the_star_without_covering_it():
    coords, words, cats, supers = _map_data()
    prompt = "a photo of a very small dog sleeping on a red sofa"
    fig = plots.embedding_map(coords[-1], words, cats, "map", here=tuple(coords[-1][0]), here_label=prompt,
                              super_categories=supers, only={"artifact", "event"})
    _no_webgl(fig)
    assert all(t.type == "scatter" for t in fig.data)
    groups = [t for t in fig.data if t.name in set(supers)]
    assert sorted(t.name for t in groups) == ["artifact", "event", "living object"]
    living = next(t for t in groups if t.name == "living object")
    assert living.visible == "legendonly" and all(t.visible is True for t in groups if t is not living)
    assert set(living.customdata) == {"living object 0", "living object 1"}  # the fine category, on hover
    star = fig.layout.annotations[0]
    assert star.text.startswith("a photo of a very small dog") and star.text.endswith("…") and len(star.text) <= 32
    assert star.showarrow and np.hypot(star.ax, star.ay) >= 40  # the label sits away from the star, with an arrow
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container" and fig.layout.legend.y == 0


def test_embedding_map_animation_has_a_frame_per_step_play_and_fixed_axes():
    coords, words, cats, supers = _map_data(steps=5)
    here = [tuple(coords[k][3] + 0.1) for k in range(5)]
    fig = plots.embedding_map_animation(coords, words, cats, supers, "UNet middle block", here=here, here_label="a dog",
                                        step_label=lambda k: f"step {k} of 4")
    _no_webgl(fig)
    assert len(fig.frames) == 5 and [f.name for f in fig.frames] == ["0", "1", "2", "3", "4"]
    buttons = fig.layout.updatemenus[0].buttons
    assert buttons[0].label == "▶ Play" and buttons[0].method == "animate" and buttons[0].args[0] is None
    assert buttons[1].label.endswith("Pause")
    slider = fig.layout.sliders[0]
    assert [s.label for s in slider.steps] == [f"step {k} of 4" for k in range(5)]
    # points travel: every frame moves the same words (ids) to that step's coordinates, inside fixed axes
    for k, frame in enumerate(fig.frames):
        artifact = next(t for t in frame.data if t.name == "artifact")
        idx = [i for i, s in enumerate(supers) if s == "artifact"]
        assert list(artifact.ids) == [words[i] for i in idx]
        assert np.allclose(artifact.x, coords[k][idx, 0]) and np.allclose(artifact.y, coords[k][idx, 1])
        assert frame.data[-1].x[0] == pytest.approx(here[k][0]) and frame.layout.annotations[-1].text == "a dog"
    x0, x1 = fig.layout.xaxis.range
    assert x0 <= coords[..., 0].min() and x1 >= coords[..., 0].max()


# -- the report ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(tiny_bundle):
    return json.loads((tiny_bundle / "report.json").read_text())


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+", text)]


def test_report_items_are_numbered_captioned_and_quote_only_the_reports_numbers(report):
    items = report_items(report)
    keys = [it["key"] for it in items]
    assert keys == ["decoding", "partition", "groups", "disambiguation", "separation", "two_v_two", "heatmaps_human",
                    "heatmaps_ref", "heatmaps_best", "entanglement"]
    assert [it["number"] for it in items] == list(range(1, 11))
    for it in items:
        _no_webgl(it["figure"])
        assert it["figure"].layout.title.text.startswith(f"Figure {it['number']}. ") and it["title"] == html_unescape(
            it["figure"].layout.title.text)
        assert len(it["caption"]) > 80 and "chance" in (it["caption"] + it["takeaway"]).lower() or it["key"].startswith("heat")
    # the three correlation maps follow each other as separate figures: the first says what all three show, the
    # others point back to it (no "top/bottom" or "left/right": they stack differently on a phone)
    first = next(it for it in items if it["key"] == "heatmaps_human")
    heat = first["caption"]
    assert "human ratings in this figure" in heat and "next two" in heat
    assert not any(w in heat for w in ("(top)", "(bottom)", "left", "right"))
    for key in ("heatmaps_ref", "heatmaps_best"):
        assert next(it for it in items if it["key"] == key)["caption"] == f"Read it like Figure {first['number']}."
    assert [(k, c) for k, _, c in report_figures(report)] == [(it["key"], f"{it['takeaway']} {it['caption']}") for it in items]
    # takeaways: every number quoted is one of the report's, rounded as printed
    reps = report["representations"]
    clip, best = results.reference_names(report)[0], results.best_per_step(report)
    decoding = items[0]
    assert decoding["values"][clip] == reps[clip]["results"][0]["mean_r"]
    assert decoding["values"][best] == reps[best]["results"][-1]["mean_r"]
    assert decoding["values"]["baseline.wordform"] == reps["baseline.wordform"]["results"][0]["mean_r"]
    printed = _numbers(decoding["takeaway"])
    null = reps[best]["results"][-1]["null_mean_r"]
    expected = [reps[clip]["results"][0]["mean_r"], reps[best]["results"][-1]["mean_r"], *null,
                reps["baseline.wordform"]["results"][0]["mean_r"]]
    assert sorted(printed) == sorted(round(v, 2) + 0.0 for v in expected)
    assert label(best) in decoding["takeaway"] and label(clip) in decoding["takeaway"]
    winner = label(clip) if reps[clip]["results"][0]["mean_r"] > reps[best]["results"][-1]["mean_r"] else label(best)
    assert decoding["takeaway"].startswith(winner)
    groups = next(it for it in items if it["key"] == "groups")
    res = reps[best]["results"][-1]["group_r"]
    top = max(res, key=res.get)
    assert f"decodes {top} best (r {res[top]:.2f})" in groups["takeaway"]
    for it in items:  # every number a takeaway prints is one the report holds (its `values`), as rounded for print
        for v in _numbers(it["takeaway"]):
            assert any(abs(v - x) <= 0.005 + 1e-9 for x in it["values"].values()), (it["key"], v, it["takeaway"])


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_curves_highlight_few_lines_grey_the_rest_and_label_the_margin_without_collisions(report):
    highlight = results.default_highlight(report)
    fig = plots.decoding_curve(report, title=f"Figure 1. {HEADINGS['decoding']}")
    lines = [t for t in fig.data if t.mode in ("lines", "lines+markers") and t.fill is None and t.showlegend is not False
             or t.legendgroup == "others"]
    coloured = [t for t in lines if t.line.color != plots.GREY and t.legendgroup != "others"]
    assert sorted(t.legendgroup for t in coloured) == sorted(highlight)
    per_step = [n for n in report["representations"] if report["representations"][n]["per_step"]]
    greys = [t for t in fig.data if t.legendgroup == "others"]
    assert len(greys) == len(per_step) - 1 + len(results.reference_names(report)) - 1
    assert sum(t.showlegend is True for t in greys) == 1  # one legend entry toggles all grey lines
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.legendgroup for t in bands] == [results.best_per_step(report)]  # CI bands only on highlighted step lines
    # margin labels: the highlighted values and chance, at least 16 px apart on screen
    notes = [a for a in fig.layout.annotations if a.xref == "paper" and a.x == 1]
    assert any(a.text == "chance 0" for a in notes) and len(notes) == len(highlight) + 1
    lo, hi = fig.layout.yaxis.range
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b - plots.LEGEND_ROW_PX * (len(highlight) + 1)
    ys = sorted(a.y for a in notes)
    assert min(np.diff(ys)) * plot_px / (hi - lo) >= 16 - 1e-6
    assert fig.layout.legend.yref == "container" and fig.layout.legend.y == 0  # below the axis title, never over it
    other = plots.decoding_curve(report, highlight=["unet.mid"])
    assert [t.legendgroup for t in other.data if t.fill == "toself"] == ["unet.mid"]


def test_report_html_is_one_self_contained_page_with_table_figures_and_settings(report):
    meta = {"model": "tiny"}
    page = report_html(report, meta)
    assert page.count("plotly.js v") == 1 and not re.search(r"<script[^>]*\ssrc=", page)  # plotly.js inlined once
    for n in range(1, 9):
        assert f"<b>Figure {n}.</b>" in page
    assert "random weights" in page and "denoising step k" in page and "reduced settings" not in page
    assert re.search(r"\.caption\{font-size:(\d+)px", page) and int(re.search(r"\.caption\{font-size:(\d+)px", page)[1]) >= 15
    for name in report["representations"]:
        assert f"<code>{name}</code>" in page and label(name).replace("'", "&#x27;") in page
    best = results.best_per_step(report)
    res = report["representations"][best]["results"]
    k = max(range(len(res)), key=lambda i: res[i]["mean_r"])
    assert step_text(k, report["steps"]) in page and f"{res[k]['mean_r']:+.3f}" in page
    null = res[k]["null_mean_r"]
    assert f"{null[0]:.2f} ± {null[1]:.2f}" in page  # the chance level next to the number
    auto = report_html({**report, "settings": {**report["settings"], "automatic": True}}, {"model": "tiny"})
    assert "reduced settings for the app&#x27;s automatic first build" in auto or "reduced settings for the app's automatic first build" in auto


# -- in a real browser -------------------------------------------------------------------------------
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _boxes(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(selector, "els => els.map(e => { const r = e.getBoundingClientRect(); "
                                               "return {x: r.x, y: r.y, w: r.width, h: r.height, text: e.textContent}; })")


def _overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["w"] - 1 and b["x"] < a["x"] + a["w"] - 1 and a["y"] < b["y"] + b["h"] - 1 and b["y"] < a["y"] + a["h"] - 1


@pytest.mark.browser
def test_figures_read_cleanly_in_a_browser_at_390_and_1400_px(report, tmp_path):
    assert _chromium(), "the browser test needs Debian's chromium on PATH: apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    coords, words, cats, supers = _map_data(steps=4)
    figs = {"bars": _bars(note="human ratings of 'dog' overlaid")[0], "bars-phone": _bars("h", note="no human ratings for 'hammer'")[0],
            "bars-domains": plots.attribute_bars(BINDER_ATTRIBUTES, GROUPS, _bars()[1], _bars()[2], domain_means=True,
                                                 title="Domain means"),
            "map": plots.embedding_map(coords[-1], words, cats, "UNet middle block", here=tuple(coords[-1][5]),
                                       here_label="a photo of a dog", super_categories=supers),
            "map-animation": plots.embedding_map_animation(coords, words, cats, supers, "UNet middle block, step by step",
                                                           here=[tuple(c[5]) for c in coords], here_label="a photo of a dog")}
    figs |= {f"figure{it['number']}-{it['key']}": it["figure"] for it in report_items(report)}
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=args)
        for width in (390, 1400):
            page = browser.new_page(viewport={"width": width, "height": 800})
            for name, fig in figs.items():
                path = tmp_path / f"{name}.html"
                fig.write_html(path, include_plotlyjs=str(_plotly_js(tmp_path)), config={"responsive": True})
                page.goto(path.as_uri())
                page.wait_for_selector(".main-svg")
                page.screenshot(path=str(OUTPUT / f"plots-{name}-{width}.png"), full_page=True)
                title = _boxes(page, ".gtitle")
                legend = _boxes(page, ".legend")  # heatmaps have none
                assert len(legend) == (0 if "heatmaps" in name else 1), name
                notes = _boxes(page, ".annotation-text")
                ticks = _boxes(page, ".xtick text") + _boxes(page, ".ytick text")
                assert len(title) == 1 and title[0]["x"] >= 0 and title[0]["x"] + title[0]["w"] <= width + 1, (name, width)
                assert not any(_overlap(title[0], b) for b in legend + notes if b["text"] != title[0]["text"]), (name, width)
                assert not any(_overlap(box, t) for box in legend for t in ticks if t["text"]), (name, width, "legend over labels")
                if name == "bars" and width == 1400:  # domain names never print over each other
                    domains = [b for b in notes if b["text"] in BINDER_DOMAINS]
                    assert len(domains) == 14
                    assert not any(_overlap(a, b) for i, a in enumerate(domains) for b in domains[i + 1:])
                if name == "bars-phone":
                    labels_ = [b for b in ticks if b["text"] in BINDER_ATTRIBUTES]
                    assert len(labels_) == 65 and all(b["x"] >= 0 for b in labels_)  # no attribute name cut at the left
                    assert not any(_overlap(a, b) for a, b in zip(labels_, labels_[1:]))
                if name == "map-animation":  # Play moves the points
                    before = page.eval_on_selector(".scatterlayer .trace .point", "e => e.getAttribute('transform')")
                    page.get_by_text("▶ Play").click()
                    page.wait_for_function("t => document.querySelector('.scatterlayer .trace .point')"
                                           ".getAttribute('transform') !== t", arg=before, timeout=10000)
            report_page = tmp_path / "report.html"
            report_page.write_text(report_html(report, {"model": "tiny"}), encoding="utf-8")
            page.goto(report_page.as_uri())
            page.wait_for_selector("#separation .main-svg")
            page.screenshot(path=str(OUTPUT / f"plots-report-{width}.png"), full_page=True)
            sizes = page.eval_on_selector_all(".caption, .takeaway, td", "els => els.map(e => parseFloat(getComputedStyle(e).fontSize))")
            assert min(sizes) >= 15, "captions, takeaways and the table read at 15 px or more"
            assert page.evaluate("document.documentElement.scrollWidth") <= width + 1  # nothing wider than a phone
            page.close()
        browser.close()


def _plotly_js(folder: Path) -> Path:
    """plotly.js once on disk, shared by every page of the test (as the report inlines it once)."""
    path = folder / "plotly.min.js"
    if not path.exists():
        from plotly.offline import get_plotlyjs

        path.write_text(get_plotlyjs(), encoding="utf-8")
    return path


def test_short_labels_and_legend_entries_follow_the_one_step_convention():
    from sdviz.labels import at_step, short

    assert [short(n) for n in ("clip.mean", "clip.layer0", "unet.down0", "unet.mid", "baseline.wordform")] == [
        "CLIP all words", "CLIP embeddings", "UNet down 1", "UNet middle", "word length"]
    assert at_step("unet.mid", 4, 20) == "UNet middle block, step 4 of 19" and at_step("clip.pooled") == label("clip.pooled")
