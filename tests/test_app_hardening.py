"""Issue 17, the app's items: what an attacker and a first-time visitor met, each fixed with a test. Numbers are
real values of the tiny model and the 60-word bundle; the browser tests drive Debian's chromium at 390 and 1400 px
(screenshots in test-output/hard-*.png)."""

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import BINDER_CSV, OUTPUT

HTML = '<a href="https://evil.invalid/">login</a><img src=x>'


@pytest.fixture(scope="module")
def served(launch_app, tiny_bundle, subset_csv):
    with launch_app("tiny", "cpu", str(tiny_bundle), str(subset_csv)) as app:
        app.app.wait_ready()
        yield app


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served.url, verbose=False)


def _app_with(bundle, ratings):
    from sdviz import ui

    app = ui.create_app("tiny", "cpu", str(bundle), str(ratings)).sdviz
    app.start()
    app.wait_ready()
    return app


def _sdviz_temp() -> set:
    return {p for p in Path(tempfile.gettempdir()).glob("sdviz-*")}


# -- 1. downloads leave nothing behind ----------------------------------------------------------------------------
def test_report_and_csv_downloads_leave_no_growing_files_and_nothing_after_close(launch_app, tiny_bundle, subset_csv):
    before = _sdviz_temp()
    with launch_app("tiny", "cpu", str(tiny_bundle), str(subset_csv)) as served:
        app = served.app
        app.wait_ready()
        paths = [Path(app.report_file()["value"]) for _ in range(6)]
        assert len(set(paths)) == 1 and paths[0].read_bytes() == (tiny_bundle / "report.html").read_bytes()
        history = list(app.generate("a photo of a dog", 0, 2, 7.5, None, "domain means"))[-1][6]
        for _ in range(3):
            app.write_csv(history)
        new = {p for p in _sdviz_temp() - before if p.name.startswith("sdviz-downloads-")}  # beside the live-run cache
        assert len(new) == 1, f"one download folder per app, got {sorted(map(str, new))}"
        files = [p for p in next(iter(new)).rglob("*") if p.is_file()]
        assert len([p for p in files if p.suffix == ".html"]) == 1  # six clicks, one file
        folder = next(iter(new))
    assert not folder.exists() and _sdviz_temp() == before  # closing the app removes its downloads and kept runs


# -- 2. text from a bundle (a Hub bundle is anyone's) is escaped in toasts and Markdown ---------------------------------
def test_an_attribute_name_with_html_in_a_bundle_stays_text(tiny_bundle, subset_csv, tmp_path):
    import gradio as gr

    bundle = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    evil = HTML + "Loud"
    meta, report = (json.loads((bundle / f).read_text()) for f in ("meta.json", "report.json"))
    for attrs in (meta["dataset"]["attributes"], report.get("attributes", [])):
        if "Loud" in attrs:
            attrs[attrs.index("Loud")] = evil
    for groups in (meta["dataset"]["groups"], report["groups"]):
        groups[evil] = groups.pop("Loud")
    (bundle / "meta.json").write_text(json.dumps(meta))
    (bundle / "report.json").write_text(json.dumps(report))
    app = _app_with(bundle, subset_csv)
    assert app.bundle is not None and evil in app.bundle.attributes
    with pytest.raises(gr.Error) as err:  # the toast lists the bundle's attributes
        list(app.run_steer("a photo of a dog", "no such property", 2, "clip.cond", 2, 0))
    assert "&lt;a href" in err.value.message and "<a" not in err.value.message and "<img" not in err.value.message
    _, summary, _ = list(app.run_steer("a photo of a dog", evil, 2, "clip.cond", 2, 0))[-1]
    assert "&lt;a href" in summary and "<a" not in summary and "<img" not in summary


# -- 8. bad API values get a clear message, no traceback ------------------------------------------------------------
def _call_raw(url: str, api: str, body: str) -> str:
    """Gradio's HTTP API as any script may call it, the body sent as written (gradio_client refuses NaN itself):
    the final SSE event's text."""
    import httpx

    event = httpx.post(f"{url}gradio_api/call/{api}", content=body, headers={"Content-Type": "application/json"},
                       timeout=60).json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/{api}/{event}", timeout=120).text


@pytest.mark.parametrize("seed", [math.nan, math.inf, 1e30, -1])
def test_replay_with_a_bad_seed_says_so_without_a_traceback(served, seed, caplog):
    caplog.set_level(logging.INFO)
    answer = _call_raw(served.url, "replay", json.dumps({"data": ["a photo of a dog", seed]}))
    assert "event: error" in answer and "Generation failed" not in answer, answer
    assert "seed" in answer.lower() or "maximum" in answer or "minimum" in answer, answer
    assert not [r for r in caplog.records if r.exc_info], "a traceback went to the log"


@pytest.mark.parametrize("api, args", [("/generate", (0, 2, 7.5)), ("/replay", (0,)), ("/compare", ("a photo of a dog", 0, 2)),
                                       ("/lens", (0, 2)), ("/steer", ("Loud", 2, "clip.cond", 2, 0))])
def test_every_endpoint_rejects_a_prompt_that_is_not_text(client, api, args):
    with pytest.raises(Exception, match="prompt must be text"):
        client.predict({"a": 1}, *args, api_name=api)


# -- 9. the damaged-bundle note says what is wrong; a full temp folder is one sentence ----------------------------
def test_the_damaged_bundle_note_says_what_is_wrong_and_another_model_is_another_sentence(tiny_bundle, subset_csv, tmp_path):
    notes = {}
    for case in ("meta-no-dims", "probes-garbage", "other-model"):
        bundle = tmp_path / case / "tiny"
        shutil.copytree(tiny_bundle, bundle)
        meta = json.loads((bundle / "meta.json").read_text())
        if case == "meta-no-dims":
            meta.pop("dims")
        elif case == "probes-garbage":
            (bundle / "probes.safetensors").write_bytes(b"\x00garbage" * 50)
        else:
            meta["model"] = "<b>evil</b> [x](http://e)"
        (bundle / "meta.json").write_text(json.dumps(meta))
        notes[case] = _app_with(bundle, subset_csv).bundle_note.replace("\\", "")  # as Markdown renders it
    for note in notes.values():
        assert str(tmp_path) not in note and note.endswith("so the app runs without bars.")
    assert 'has no "dims"' in notes["meta-no-dims"]
    assert "damaged" in notes["meta-no-dims"] and "probes.safetensors" in notes["probes-garbage"]
    assert "another model" in notes["other-model"] and "damaged" not in notes["other-model"]
    assert "&lt;b&gt;evil" in notes["other-model"] and "<b>" not in notes["other-model"]
    assert "another model" not in notes["meta-no-dims"] and "another model" not in notes["probes-garbage"]


def test_a_full_temp_folder_is_one_sentence_without_paths(served, monkeypatch):
    import gradio as gr

    from sdviz.ui import generate

    monkeypatch.setattr(generate, "MIN_FREE_BYTES", 1 << 62)  # no disk has that much free: the folder reads as full
    with pytest.raises(gr.Error) as err:
        list(served.app.generate("a photo of a dog", 0, 2, 7.5, None, "domain means"))
    message = err.value.message
    assert "disk" in message and "/" not in message.replace("n/a", "") and message.count(".") == 1


# -- 12. the Maps tab's separation curve follows the block selector ----------------------------------------------------
def test_the_separation_curve_highlights_the_chosen_block(served):
    from sdviz.labels import short

    app = served.app
    for block in app.map_names():
        *_, sep, _ = app.render_maps(block, [])
        traces = json.loads(sep["value"].plot)["data"]  # before a run the figure is made and serialised once
        coloured = {t.get("name") for t in traces if (t.get("line") or {}).get("width") == 3}
        unet = {n for n in coloured if n and n.startswith(("down", "mid", "up", "UNet"))}
        assert short(block) in coloured, (block, coloured)
        others = {short(b) for b in app.map_names() if b != block}
        assert not (unet & others), f"{block}: another block is highlighted too ({unet & others})"


# -- 13. a failed model load: status and hint agree; on a Space, a sentence for visitors ----------------------------
@pytest.mark.parametrize("space", [False, True])
def test_a_failed_model_load_reads_the_same_everywhere(monkeypatch, space):
    from sdviz import ui

    if space:
        monkeypatch.setenv("SPACE_ID", "someone/sdviz")
    app = ui.create_app("no-such-owner/no-such-model", "cpu", None, None).sdviz
    app.start()
    app._ready.wait(120)
    assert app.phase == "failed"
    polled = app.poll(-1)
    status, hint = polled[app.page.status], polled[app.page.hint]["value"]
    assert "could not be loaded" in status and "could not be loaded" in hint
    assert "Run turns blue" not in hint and "loading" not in hint.lower()
    assert polled[app.page.run]["interactive"] is False
    if space:
        assert not any(s in status + hint for s in ("`", "python", "hf download", "--model", "huggingface-cli")), status


# -- 17. numbers that read as contradictions -----------------------------------------------------------------------
def test_a_value_at_chance_says_so_at_the_same_precision(tiny_bundle):
    from sdviz.plots import separation_curve
    from sdviz.results import knn_chance

    report = json.loads((tiny_bundle / "report.json").read_text())
    chance = knn_chance(report)
    for rep in report["representations"].values():
        for res in rep["results"]:
            res["knn_accuracy"] = chance - 0.001
    texts = [a.text for a in separation_curve(report).layout.annotations]
    chance_label = next(t for t in texts if t.startswith("chance"))
    assert chance_label == f"chance {chance:.2f}"
    values = [t for t in texts if not t.startswith("chance")]
    assert values and all("at chance" in t for t in values), texts


def test_compare_says_what_each_distance_is_on_the_maps_scale(served):
    import numpy as np
    import torch

    from sdviz.maps import map_space

    app = served.app
    *_, summary, _, _, cmap, distances = list(app.run_compare("a photo of a dog", "a photo of a cabbage", 0, 2))[-1]
    result = app.compare_on_gpu("a photo of a dog", "a photo of a cabbage", 0, 2)
    maps, name = app.bundle.maps, "clip.mean"
    a, b = (map_space(maps, name, 0, result.trace.features[name][i]) for i in (0, 1))
    d = 1 - float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    points = maps[f"{name}.points"][0].double()
    unit = points / points.norm(dim=1, keepdim=True)
    pairs = 1 - (unit @ unit.T)[np.triu_indices(len(points), 1)]
    typical = float(pairs.median())
    assert f"{d:.2f} apart" in summary and f"{typical:.2f}" in summary, summary
    assert "raw" in summary and "CLIP map" in summary


# -- 18. every word the page names is rated ------------------------------------------------------------------------
def test_every_word_named_in_help_texts_and_defaults_is_rated():
    import re

    import gradio as gr

    from sdviz import ui
    from sdviz.ratings import load_ratings
    from sdviz.ui import layout, maps

    rated = {w.lower() for w in load_ratings(BINDER_CSV).words}
    demo = ui.create_app("tiny", "cpu", None, None)
    prompts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Textbox) and "Prompt" in str(b.label)]
    prompts += layout.EXAMPLES
    assert len(prompts) >= 9
    for prompt in prompts:
        assert prompt.split()[-1].lower() in rated, prompt
    named = re.search(r"\(([^)]*)…\)", maps.HOW_TO_READ)[1]
    for word in re.findall(r"[a-z]+", named):
        assert word in rated, word


# -- 19. the CSV names its run ---------------------------------------------------------------------------------------
def test_the_csv_has_prompt_and_seed_columns(served):
    import csv

    history = list(served.app.generate("a photo of a dog", 7, 2, 7.5, None, "domain means"))[-1][6]
    rows = list(csv.reader(open(served.app.write_csv(history)["value"])))
    assert rows[0][:5] == ["prompt", "seed", "step", "timestep", "representation"]
    assert {(r[0], r[1]) for r in rows[1:]} == {("a photo of a dog", "7")}
    assert len(rows[0]) == 5 + 65


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


# -- 2, 16, 19: in a real browser ---------------------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.parametrize("width", [390, 1400])
def test_a_first_visitor_at_390_and_1400_px(served, browser_page, width):
    from conftest import LABEL_CORNERS, overlaps
    from test_app import _run_in_page

    with browser_page(width, 900) as page:
        fetched = []
        page.on("request", lambda r: fetched.append(r.url) if "evil.invalid" in r.url or r.url.endswith("/x") else None)
        page.goto(served.url, wait_until="domcontentloaded")
        page.locator("#tiny-banner").wait_for(timeout=60000)
        # 16: every tab is a labelled button on the tab bar, none behind an unlabelled overflow menu
        for name in ("Generate", "Maps", "Report", "Steer", "Compare", "CLIP layers"):
            assert page.get_by_role("tab", name=name).is_visible(), f"{name} is hidden at {width}px"
        _run_in_page(page, "a photo of a dog", 3)
        page.wait_for_timeout(600)
        page.screenshot(path=str(OUTPUT / f"hard-generate-{width}.png"), full_page=True)
        # 19: a Try example clears the previous results
        page.locator(".gallery-item, [data-testid='examples'] button").filter(has_text="a photo of a volcano").first.click()
        page.wait_for_function("document.querySelector('#prompt textarea').value === 'a photo of a volcano'", timeout=10000)
        page.wait_for_function("!document.querySelector('#bars .js-plotly-plot') && "
                               "!(document.querySelector('#counter')?.innerText || '').trim()", timeout=10000)

        _run_in_page(page, "a photo of a dog", 3)
        _open_tab(page, "Maps")
        page.locator("#clip-map .js-plotly-plot").wait_for(timeout=30000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"hard-maps-{width}.png"), full_page=True)
        # 16: the star's label sits inside the map
        for where in ("#clip-map", "#unet-map"):
            plot = page.locator(f"{where} .js-plotly-plot").bounding_box()
            labels = [a.bounding_box() for a in page.locator(f"{where} .annotation").all()]
            assert labels, f"{where} has no star label"
            for box in labels:
                assert plot["x"] - 1 <= box["x"] and box["x"] + box["width"] <= plot["x"] + plot["width"] + 1, where

        _open_tab(page, "Report")
        page.locator("#report-fig-0 .js-plotly-plot").wait_for(timeout=30000)
        page.wait_for_timeout(600)
        page.screenshot(path=str(OUTPUT / f"hard-report-{width}.png"), full_page=True)
        # 16: "chance" is never broken across two lines in the summary table's header
        split = page.evaluate("""() => [...document.querySelectorAll('#report-tab th')].filter(th => {
            const i = th.innerText.indexOf('chance'); if (i < 0) return false;
            const node = [...th.querySelectorAll('*'), th].flatMap(e => [...e.childNodes]).find(n => n.nodeType === 3 && n.data.includes('chance'));
            const r = document.createRange(); const j = node.data.indexOf('chance'); r.setStart(node, j); r.setEnd(node, j + 6);
            return r.getClientRects().length > 1; }).length""")
        assert split == 0

        # 2: HTML typed into Steer's property comes back as text, never as a live link or image
        _open_tab(page, "Steer")
        page.wait_for_function("document.querySelector('#steer-attribute input')?.value === 'Loud'", timeout=30000)
        box = page.locator("#steer-attribute input")
        box.fill(HTML)
        box.press("Enter")
        page.locator("#steer-run").click()
        toast = page.locator("[data-testid='toast-body']").first
        toast.wait_for(timeout=60000)
        assert "login" in toast.inner_text()
        assert page.locator("[data-testid='toast-body'] a, [data-testid='toast-body'] img").count() == 0
        assert page.locator(".prose a[href*='evil'], .prose img[src='x']").count() == 0
        page.locator("[data-testid='toast-close']").first.click()
        box.fill("Loud")
        box.press("Enter")
        page.locator("#steer-run").click()
        page.locator("#steer-figure .js-plotly-plot").wait_for(timeout=120000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"hard-steer-{width}.png"), full_page=True)
        ticks = page.locator("#steer-figure .xtick text").evaluate_all(LABEL_CORNERS)
        assert not overlaps(ticks), "Steer's x labels collide"

        _open_tab(page, "Compare")
        page.locator("#compare-run").click()
        page.locator("#compare-map .js-plotly-plot").wait_for(timeout=120000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"hard-compare-{width}.png"), full_page=True)
        strip = page.locator("#compare-strip img")
        assert strip.count() == 10  # 5 steps of each prompt
        for img in strip.all():  # every step on screen, none scrolled away sideways
            b = img.bounding_box()
            assert b and b["x"] >= 0 and b["x"] + b["width"] <= width + 1

        _open_tab(page, "CLIP layers")
        page.locator("#lens-run").click()
        page.locator("#lens-figure .js-plotly-plot").wait_for(timeout=120000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"hard-lens-{width}.png"), full_page=True)
        images = page.locator("#lens-images img")
        assert images.count() >= 5
        for img in images.all():
            b = img.bounding_box()
            assert b and b["x"] >= 0 and b["x"] + b["width"] <= width + 1, "a CLIP-layer image is cut off"
        cut = page.evaluate("""() => [...document.querySelectorAll('#lens-images .caption-label, #lens-images figcaption')]
            .filter(c => c.scrollWidth > c.clientWidth + 1).length""")
        assert cut == 0, "captions are truncated"
        assert not fetched, f"the page fetched {fetched}"
