"""Recorded runs replayed in the app (no Run press, no GPU), the animated Maps tab, and every tab at 390, 768 and
1400 px after a replay, in a real browser. Screenshots go to test-output/replay-*.png; with
SDVIZ_UPDATE_SCREENSHOT=1 the 1400 px Generate screenshot also replaces the README's assets/screenshot-generate.png."""

import os
import time

import pytest
from conftest import LABEL_CORNERS, OUTPUT, ROOT, overlaps

PROMPTS = ["a photo of a dog", "a photo of a violin"]
README_SHOT = ROOT / "assets" / "screenshot-generate.png"
CLICK_TO_BARS: dict[int, float] = {}  # measured seconds per width, printed at the end (pytest -s)


@pytest.fixture(scope="module")
def replay_url(tiny_pipe, tiny_bundle, subset_csv, tmp_path_factory, launch_app):
    from sdviz.record import record_runs

    folder = record_runs(tiny_pipe, PROMPTS, tmp_path_factory.mktemp("rec") / "runs", seed=0, steps=3,
                         bundle=tiny_bundle, progress=False)
    with launch_app("tiny", "cpu", str(tiny_bundle), str(subset_csv), recordings=str(folder)) as served:
        yield served.url
    if CLICK_TO_BARS:
        print("click -> bars:", ", ".join(f"{w} px {s:.2f} s" for w, s in sorted(CLICK_TO_BARS.items())))


def test_record_then_replay_gives_the_live_runs_decoded_json(replay_url):
    from gradio_client import Client

    client = Client(replay_url, verbose=False)
    live = client.submit(PROMPTS[1], 0, 3, 7.5, api_name="/generate")
    list(live)
    replay = client.submit(PROMPTS[1], 0, api_name="/replay")
    list(replay)
    live_json, (_, counter, replay_json, status) = live.outputs()[-1][2], replay.outputs()[-1]
    assert "recorded run" in status and counter.startswith("**step 2 of 2**")
    assert replay_json == live_json and len(replay_json) == 3


def test_a_replay_never_waits_behind_a_live_run(replay_url):
    """Replays have their own queue: one finishes while a long live run holds the generation slot."""
    from gradio_client import Client

    client = Client(replay_url, verbose=False)
    live = client.submit(PROMPTS[0], 1, 50, 7.5, api_name="/generate")
    next(iter(live))  # the live run is streaming: it holds the one generation slot
    replay = client.submit(PROMPTS[0], 0, api_name="/replay")
    list(replay)
    try:
        assert replay.outputs()[-1][1].startswith("**step 2 of 2**")
        assert not live.done(), "the replay waited for the 50-step live run"
    finally:
        live.cancel()


def _replay_in_page(page, prompt: str) -> float:
    """Click the recorded example of `prompt` (no Run press); seconds from the click until the bars are drawn."""
    example = page.locator("#recorded").get_by_text(prompt)
    example.wait_for(timeout=60000)
    assert "recorded with tiny" in page.locator("#recorded").inner_text()
    start = time.perf_counter()
    example.click()
    page.locator("#bars .js-plotly-plot .bars path").first.wait_for(timeout=30000)
    seconds = time.perf_counter() - start
    page.wait_for_function("document.querySelector('#counter')?.innerText.includes('step 2 of 2')", timeout=30000)
    return seconds


def _point_positions(page) -> list:
    return page.eval_on_selector_all("#unet-map .scatterlayer .trace .point", "els => els.map(e => e.getAttribute('transform'))")


@pytest.mark.browser
@pytest.mark.parametrize("width", [390, 768, 1400])
def test_a_recorded_example_replays_on_click_and_every_tab_reads_cleanly(replay_url, browser_page, width):
    with browser_page(width) as page:
        page.goto(replay_url, wait_until="domcontentloaded")
        seconds = CLICK_TO_BARS[width] = _replay_in_page(page, PROMPTS[0])
        assert seconds < 3, f"bars {seconds:.1f} s after the click at {width} px"
        assert "recorded run" in page.locator("#status").inner_text()
        assert page.locator("#prompt textarea").input_value() == PROMPTS[0]
        page.wait_for_function("document.querySelector('#scrub input[type=number]')?.value === '2'", timeout=10000)
        # one step convention: counter, bar legend and scrubber all say step 2 (of 0..2)
        assert page.locator("#counter").inner_text().startswith("step 2 of 2")
        legend = " ".join(t.text_content() for t in page.locator("#bars .legendtext").all())
        assert "at step 2 of 2" in legend
        # results where the eye goes after the click, Stop secondary
        run_box, image_box = page.locator("#run").bounding_box(), page.locator("#image").bounding_box()
        assert abs(image_box["y"] - run_box["y"]) < 700
        assert page.locator("#stop").bounding_box()["width"] < run_box["width"] / 2
        for view in ("all attributes", "domain means"):
            page.get_by_label(view).check()
            page.wait_for_timeout(1200)
            ticks = page.locator("#bars .xtick text, #bars .ytick text").evaluate_all(LABEL_CORNERS)
            assert len(ticks) >= 10 and not overlaps(ticks), f"{view} at {width}px: axis labels overlap"
            page.screenshot(path=str(OUTPUT / f"replay-generate-{width}-{view.split()[0]}.png"), full_page=True)
        if width == 1400 and os.environ.get("SDVIZ_UPDATE_SCREENSHOT") == "1":  # the README's picture, down to the controls
            bottom = page.evaluate("() => document.querySelector('#block').getBoundingClientRect().bottom + window.scrollY")
            page.screenshot(path=str(README_SHOT), full_page=True, clip={"x": 0, "y": 0, "width": 1400, "height": bottom + 12})

        page.get_by_role("tab", name="Maps").click()
        page.locator("#unet-map .scatterlayer .trace .point").first.wait_for(timeout=30000)
        caption = page.locator("#map-caption").inner_text()
        assert "star" in caption and not {"left", "right"} & set(caption.lower().replace("(", " ").split())
        play = page.locator("#unet-map").get_by_text("▶ Play")
        play.wait_for(timeout=10000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"replay-maps-{width}.png"), full_page=True)
        before = _point_positions(page)
        play.click()  # the animation's frames move the same points (no redraw): their positions change
        page.wait_for_function("b => Array.from(document.querySelectorAll('#unet-map .scatterlayer .trace .point'))"
                               ".some((e, i) => e.getAttribute('transform') !== b[i])", arg=before, timeout=10000)
        assert len(_point_positions(page)) == len(before)

        page.get_by_role("tab", name="Report").click()
        page.locator("#report-fig-0 .js-plotly-plot").wait_for(timeout=30000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"replay-report-{width}.png"), full_page=True)
