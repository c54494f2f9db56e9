"""Showing the paper's thesis (issue 18): the partition and entanglement figures, the Findings section of report.html,
the notes beside every number of a random-weight model, and old bundles without the new keys. Against the tiny bundle's
real report with made-up, contract-shaped thesis keys (tests/beyond_report.py)."""

import html
import json
import re

import numpy as np
import pytest
from beyond_report import with_beyond_keys

from sdviz import results
from sdviz.labels import step_text
from sdviz.plots import entanglement_curve, matrix_animation, partition_curve
from sdviz.plots.thesis import RANGES
from sdviz.report import HEADINGS, RANDOM_FINDINGS, REBUILD, report_html, report_items

THESIS_KEYS = ("partition", "entanglement", "findings")


@pytest.fixture(scope="module")
def plain(tiny_bundle):
    """The tiny bundle's report as a bundle built before issue 18 has it: without the three keys."""
    report = json.loads((tiny_bundle / "report.json").read_text())
    return {k: v for k, v in report.items() if k not in THESIS_KEYS}


@pytest.fixture(scope="module")
def old_bundle(tiny_bundle, plain, tmp_path_factory):
    """The tiny bundle on disk as one built before issue 18: its report.json without the three keys."""
    import shutil

    out = tmp_path_factory.mktemp("old") / "tiny"
    shutil.copytree(tiny_bundle, out)
    (out / "report.json").write_text(json.dumps(plain))
    return out


@pytest.fixture(scope="module")
def meta(tiny_bundle):
    return json.loads((tiny_bundle / "meta.json").read_text())


@pytest.fixture(scope="module")
def report(plain):
    return with_beyond_keys(plain)


def _ys(fig, yaxis: str = "y") -> list[float]:
    return [float(v) for t in fig.data if (t.yaxis or "y") == yaxis and t.y is not None for v in t.y if v is not None]


def _range(fig, axis: str) -> list[float]:
    return list(fig.layout[axis].range)


def test_partition_figure_clips_intervals_to_the_metric_range_and_keeps_every_trace_inside_its_axes(report):
    part = results.partition(report)
    first = next(iter(part["blocks"]))  # the fixture's first block has a CI reaching 1.3 and -1.4 and a null sd of 0.6
    fig = partition_curve(part, first, title="t")
    lo, hi = _range(fig, "yaxis")
    ys = _ys(fig)
    assert min(ys) >= lo and max(ys) <= hi
    assert min(ys) >= RANGES["difference"][0] and max(ys) <= RANGES["difference"][1]
    assert fig.layout.xaxis.title.text.startswith("denoising step") and "mean r" in fig.layout.yaxis.title.text
    names = [t.name for t in fig.data if t.showlegend is not False and t.name]
    assert any("adds beyond CLIP" in n for n in names) and any("shuffled ratings" in n for n in names)
    assert any("residual" in n for n in names) and "shared" in names and "CLIP adds beyond the block" in names
    # the highlighted line is the block's own unique part, value for value
    line = next(t for t in fig.data if t.name and "adds beyond CLIP" in t.name)
    assert list(line.y) == pytest.approx([e["value"] for e in part["blocks"][first]["unet_unique"]])
    # its band is the interval, clipped to [-2, 2]: the fixture's step 0 runs from -1.4 to -0.5
    band = next(t for t in fig.data if t.fill == "toself" and t.legendgroup == "unique")
    n = len(line.y)
    assert band.y[0] == pytest.approx(part["blocks"][first]["unet_unique"][0]["ci"][1])
    assert band.y[-1] == pytest.approx(-1.4) and len(band.y) == 2 * n


def test_entanglement_figure_has_rsa_with_its_null_and_offdiagonal_against_the_human_line(report):
    ent = results.entanglement(report)
    fig = entanglement_curve(ent, ["unet.mid", "clip.cond"], title="t")
    for axis, yaxis, kind in (("yaxis", "y", "score"), ("yaxis2", "y2", "offdiag")):
        lo, hi = _range(fig, axis)
        ys = _ys(fig, yaxis)
        assert ys and min(ys) >= lo and max(ys) <= hi
        assert min(ys) >= RANGES[kind][0] and max(ys) <= RANGES[kind][1]
    assert "RSA" in fig.layout.yaxis.title.text and "mean |r|" in fig.layout.yaxis2.title.text
    assert fig.layout.xaxis2.title.text.startswith("denoising step")
    human = next(t for t in fig.data if t.name == "human ratings")
    assert list(human.y) == pytest.approx([ent["human_offdiag"]] * 2)
    rsa = next(t for t in fig.data if t.name == "UNet middle" and (t.yaxis or "y") == "y")
    assert list(rsa.y) == pytest.approx([e["value"] for e in ent["reps"]["unet.mid"]["rsa"]])
    null = next(t for t in fig.data if t.name and t.name.startswith("shuffled ratings"))
    assert max(null.y) == pytest.approx(max(e["null"][0] + 2 * e["null"][1] for e in ent["reps"]["unet.mid"]["rsa"]))


def test_matrix_animation_has_a_frame_per_step_and_the_human_matrix_is_one_still_figure(report):
    ent = results.entanglement(report)
    mats = ent["reps"]["unet.mid"]["matrices"]
    fig = matrix_animation(mats, report["attributes"], lambda k: step_text(k, len(mats)), groups=report["groups"],
                           name="UNet middle")
    assert len(fig.frames) == len(mats) == report["steps"]
    assert np.allclose(fig.data[0].z, mats[0]) and np.allclose(fig.frames[-1].data[0].z, mats[-1])
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(k) for k in range(len(mats))]
    assert fig.frames[1].layout.title.text == f"UNet middle, {step_text(1, len(mats))}"
    assert fig.data[0].zmin == -1 and fig.data[0].zmax == 1 and fig.layout.yaxis.scaleanchor == "x"
    # one label per domain of two or more attributes: none print over each other
    assert "Vision" in fig.layout.xaxis.ticktext and "Gustation" not in fig.layout.xaxis.ticktext
    # a long run keeps evenly spaced matrices: the slider and titles name their real steps
    spaced = matrix_animation(mats, report["attributes"], lambda k: step_text(k, 40), steps=[0, 20, 39])
    assert [s.label for s in spaced.layout.sliders[0].steps] == ["0", "20", "39"]
    assert spaced.frames[2].layout.title.text.endswith(step_text(39, 40))
    human = matrix_animation([report["human_corr"]], report["attributes"], groups=report["groups"], name="human ratings")
    assert not human.frames and not human.layout.sliders and human.layout.title.text == "human ratings"
    assert np.allclose(human.data[0].z, report["human_corr"])


def test_report_items_add_the_two_figures_with_takeaways_quoting_the_reports_numbers(report, plain):
    items = {it["key"]: it for it in report_items(report)}
    assert items["partition"]["heading"] == HEADINGS["partition"] and items["entanglement"]["heading"] == HEADINGS["entanglement"]
    part = items["partition"]
    block = next(b for b in results.partition(report)["blocks"] if b == results.best_per_step(report))
    last = results.partition(report)["blocks"][block]["unet_unique"][-1]
    assert part["values"]["value"] == last["value"] and f"{last['value']:+.3f}" in part["takeaway"]
    assert f"[95% CI {last['ci'][0]:+.3f}, {last['ci'][1]:+.3f}]" in part["takeaway"]
    # on a random-weight model the takeaway says what word form alone decodes
    wf = results.wordform_value(report, "mean_r")
    assert f"word form alone decodes mean r {wf:.2f}" in part["takeaway"]
    ent = items["entanglement"]
    assert f"against {results.entanglement(report)['human_offdiag']:.2f} in the human ratings" in ent["takeaway"]
    # every number a takeaway quotes is one of its values
    for it in (part, ent):
        quoted = {round(abs(float(x)), 2) for x in re.findall(r"[-+]?\d+\.\d+", it["takeaway"])}
        known = {round(abs(v), 2) for v in it["values"].values()} | {0.0}
        assert quoted <= known, (it["key"], quoted - known)
    # an old report has neither figure, and every other figure as before
    old = [it["key"] for it in report_items(plain)]
    assert "partition" not in old and "entanglement" not in old
    assert [k for k in items if k not in ("partition", "entanglement")] == old


def test_report_html_opens_with_three_findings_as_badges_with_baselines_and_escapes_bundle_text(report, meta):
    page = report_html(report, meta)
    findings = page.index("<section id='findings'>")
    assert findings < page.index("<h2>Summary") < page.index("<h2>Figures")
    section = page[findings: page.index("</section>", findings)]
    verdicts = re.findall(r"<span class='verdict (\w+)'>([^<]+)</span>", section)
    assert verdicts == [("holds", "✓ holds"), ("fails", "✗ does not hold"), ("unsure", "? cannot tell at this precision")]
    assert section.count("class='baseline'") == 3 and "Chance gives 0.00 ± 0.02 and word form alone gives 0.05." in section
    # the sentence is the bundle's text, escaped: no markup from a bundle reaches the page
    assert "<b>& not</b>" not in page and html.escape("<b>& not</b>") in section
    for key in ("partition", "entanglement"):
        assert f"<section id='{key}'>" in page
    assert "Rebuild this bundle" not in page and "banded ridge" in page  # the partition's method in the settings


def test_an_old_bundle_shows_one_line_to_rebuild_and_no_error(plain, meta, old_bundle, tmp_path):
    page = report_html(plain, meta)
    line = html.escape(REBUILD).replace("`python -m sdviz build`", "<code>python -m sdviz build</code>")
    assert page.count(line) == 1
    assert "<section id='partition'>" not in page and "class='verdict" not in page
    assert results.partition(plain) is None and results.entanglement(plain) is None and results.findings(plain) is None
    # a bundle on disk without the keys loads and writes its report
    from sdviz.report import write_report

    out = write_report(old_bundle, tmp_path / "report.html")
    assert line in out.read_text()


def test_every_number_of_a_random_weight_model_says_what_chance_and_word_form_give(report, meta):
    assert results.random_weights(report) and results.random_weights({"model": "random-init:sentence-transformers/x"})
    page = report_html(report, meta)
    findings = page[page.index("<section id='findings'>"): page.index("<h2>Summary")]
    assert html.escape(RANDOM_FINDINGS) in findings  # the verdicts of a random model say they test the machinery
    table = page[page.index("<h2>Summary"): page.index("<h2>Figures")]
    rows = table.count("<tr>") - 1
    wf = {m: results.wordform_value(report, m) for m in ("mean_r", "two_v_two", "disambiguation")}
    assert table.count("word form alone") == 3 * rows
    assert f"word form alone {wf['two_v_two']:.3f}" in table
    # p at the floor the shuffles allow says so
    m = report["settings"]["permutations"]
    floor = sum(1 for r in results.summary_rows(report) if r["p_mean_r"] == pytest.approx(1 / (1 + m)))
    assert table.count(f"the smallest p {m} shuffles allow") == floor
    for it in report_items(report):
        if it["key"] in ("groups", "disambiguation", "heatmaps_ref", "heatmaps_best", "partition", "entanglement"):
            assert "Random weights:" in it["takeaway"] and "word form alone" in it["takeaway"], it["key"]
    # a trained model's page carries no such notes
    trained = dict(report, model="stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert not results.random_weights(trained)
    page = report_html(trained, meta | {"model": trained["model"]})
    assert "word form alone 0" not in page[page.index("<h2>Summary"): page.index("<h2>Figures")]
    assert html.escape(RANDOM_FINDINGS) not in page
    assert not any("Random weights:" in it["takeaway"] for it in report_items(trained))


# -- the app: the Report tab opens with the Findings; the panel shows one block beyond CLIP and its matrix over steps --
@pytest.fixture(scope="module")
def thesis_bundle(tiny_bundle, report, tmp_path_factory):
    """The tiny bundle with the made-up thesis keys in its report.json."""
    import shutil

    out = tmp_path_factory.mktemp("thesis") / "tiny"
    shutil.copytree(tiny_bundle, out)
    (out / "report.json").write_text(json.dumps(report))
    return out


def _app_with(bundle_path):
    """An App (not served) holding this bundle as reload_bundle would: enough for the Report tab's handlers."""
    from sdviz.bundle import load_bundle
    from sdviz.ui.app import App
    from sdviz.ui.figures import page_figures

    app = App("tiny", "cpu", str(bundle_path), None)
    app.bundle = load_bundle(bundle_path)
    app.report_figures = page_figures(app.bundle.report)
    app.unet_names = [results.best_per_step(app.bundle.report)]
    return app


def test_report_tab_handlers_show_findings_first_escaped_and_the_panel_or_one_rebuild_line(thesis_bundle, old_bundle):
    from sdviz.ui.report import REPORT_SLOTS, THESIS_SLOTS

    app = _app_with(thesis_bundle)
    out = app.render_report()
    assert len(out) == 1 + 2 * REPORT_SLOTS + THESIS_SLOTS
    intro = out[0]
    assert intro.startswith("### Findings") and intro.index("does not hold") < intro.index("| part of the model")
    badges = re.findall(r"<span class='verdict' style='background:(#\w+);[^']*'>([^<]+)</span>", intro)
    assert badges == [("#1e7b34", "✓ holds"), ("#b3261e", "✗ does not hold"), ("#666", "? cannot tell at this precision")]
    assert intro.count("Chance and word form alone:") == 3 and RANDOM_FINDINGS in intro
    assert "<b>" not in intro and "&lt;b&gt;" in intro  # bundle text is escaped for Markdown
    assert "word form alone" in intro[intro.index("| part of the model"):]  # random weights: beside every number
    captions = [u["value"] for u in out[1:1 + 2 * REPORT_SLOTS:2] if u.get("visible")]
    assert len(captions) == len(report_items(app.bundle.report)) == 10 and "beyond CLIP" in captions[1]
    choice, note, partition_fig, matrix_note, matrix_fig, human_fig = out[-THESIS_SLOTS:]
    assert choice["value"] == app.unet_names[0] and len(choice["choices"]) == len(results.partition(app.bundle.report)["blocks"])
    plotted = lambda update: json.loads(update["value"].plot)  # noqa: E731 - made and serialised once for every visitor
    assert partition_fig["visible"] and matrix_fig["visible"] and len(plotted(matrix_fig)["frames"]) == app.bundle.report["steps"]
    assert human_fig["visible"] and np.allclose(plotted(human_fig)["data"][0]["z"], app.bundle.report["human_corr"])
    assert HEADINGS["entanglement"] in matrix_note["value"]
    other = app.render_thesis("unet.up0")
    assert other[0]["value"] == "unet.up0" and "UNet up 1" in plotted(other[2])["layout"]["title"]["text"]
    # a bundle built before the keys: one line, no error, no panel
    old = _app_with(old_bundle).render_report()
    assert f"*{REBUILD}*" in old[0] and not any(u.get("visible") for u in old[-THESIS_SLOTS:][::2])


@pytest.mark.parametrize("width", [390, 1400])
def test_the_report_tab_shows_the_findings_and_the_animated_matrix_in_a_browser(launch_app, browser_page, thesis_bundle,
                                                                                subset_csv, width):
    from conftest import OUTPUT

    with launch_app("tiny", "cpu", str(thesis_bundle), str(subset_csv)) as served, browser_page(width, 900) as page:
        page.goto(served.url)
        page.get_by_role("tab", name="Report").click()
        page.locator("#report-fig-0 .js-plotly-plot").wait_for(timeout=60000)
        tab = page.locator("#report-tab")
        text = tab.inner_text()
        assert text.index("Findings") < text.index("Figure 1.")
        for verdict in ("✓ holds", "✗ does not hold", "? cannot tell at this precision"):
            assert verdict in text
        assert "<b>& not</b> made up" in text  # shown as text, never as markup
        page.locator("#thesis-matrix .js-plotly-plot").wait_for(timeout=30000)
        frames = "document.querySelector('#thesis-matrix .js-plotly-plot')?._transitionData?._frames?.length || 0"
        page.wait_for_function(f"{frames} >= {served.app.bundle.report['steps']}", timeout=30000)
        page.locator("#thesis-partition .js-plotly-plot").wait_for(timeout=30000)
        page.locator("#thesis-human .js-plotly-plot").wait_for(timeout=30000)
        matrix, human = page.locator("#thesis-matrix").bounding_box(), page.locator("#thesis-human").bounding_box()
        if width == 1400:  # side by side on a wide screen, one above the other on a phone
            assert abs(matrix["y"] - human["y"]) < 5 and human["x"] > matrix["x"] + matrix["width"] - 5
        else:
            assert human["y"] >= matrix["y"] + matrix["height"] - 5
        page.wait_for_timeout(800)
        page.locator("#report-tab").screenshot(path=str(OUTPUT / f"thesis-report-tab-{width}.png"))
        page.locator("#thesis-matrix").screenshot(path=str(OUTPUT / f"thesis-matrix-{width}.png"))
        page.locator("#thesis-human").screenshot(path=str(OUTPUT / f"thesis-human-{width}.png"))
        page.locator("#thesis-partition").screenshot(path=str(OUTPUT / f"thesis-partition-{width}.png"))


def test_the_generate_tabs_agreement_on_random_weights_says_what_chance_and_word_form_give(report):
    from sdviz.ui.generate import _random_weights_note

    note = _random_weights_note(report, "clip.cond")
    wf, clip = results.wordform_value(report, "mean_r"), results.result(report, "clip.cond")["mean_r"]
    assert "chance gives r 0" in note and f"word form alone decodes the ratings with mean r {wf:+.2f}" in note
    assert f"{clip:+.2f}" in note and "not a finding" in note
    assert _random_weights_note(dict(report, model="stable-diffusion-v1-5/stable-diffusion-v1-5"), "clip.cond") == ""
