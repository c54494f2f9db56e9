"""End-to-end tests of the Gradio app on the tiny model: gradio_client against a locally launched app,
and a real browser (Debian's chromium driven by Playwright)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import LABEL_CORNERS, OUTPUT, all_hooks, overlaps


@pytest.fixture(scope="module")
def served(launch_app, tiny_bundle, subset_csv):
    with launch_app("tiny", "cpu", str(tiny_bundle), str(subset_csv)) as app:
        yield app


@pytest.fixture(scope="module")
def app_url(served):
    return served.url


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def _run(client, prompt, seed=0, steps=3, guidance=7.5):
    job = client.submit(prompt, seed, steps, guidance, api_name="/generate")
    updates = list(job)
    return updates, job.outputs()[-1]


def test_generate_streams_one_update_per_step_with_decoded_attributes(client):
    updates, (image, counter, decoded, status) = _run(client, "a photo of a dog", steps=3)
    assert len(updates) == 3
    assert counter.startswith("**step 2 of 2**") and image
    assert [d["step"] for d in decoded] == [0, 1, 2]
    last = decoded[-1]["decoded"]
    assert {"clip.pooled", "clip.mean", "unet.mid", "unet.up2", "latents"} <= set(last)
    assert len(last["unet.mid"]) == 65 and "Loud" in last["unet.mid"] and "Pleasant" in last["clip.pooled"]
    # CLIP's decoding is the same at every step; the UNet's changes
    assert decoded[0]["decoded"]["clip.pooled"] == decoded[2]["decoded"]["clip.pooled"]
    assert decoded[0]["decoded"]["unet.mid"] != decoded[2]["decoded"]["unet.mid"]


def test_the_app_decodes_exactly_what_the_library_decodes(client, tiny_pipe, tiny_bundle):
    import numpy as np

    from sdviz import stream
    from sdviz.bundle import load_bundle

    _, (_, _, decoded, _) = _run(client, "a photo of a violin", seed=5, steps=4, guidance=3.0)
    bundle = load_bundle(tiny_bundle)
    records = list(stream(tiny_pipe, "a photo of a violin", seed=5, steps=4, guidance=3.0))
    for rec, row in zip(records, decoded):
        ours = bundle.predict("unet.up1", rec.features["unet.up1"], rec.step, 4)
        np.testing.assert_allclose([row["decoded"]["unet.up1"][a] for a in bundle.attributes], ours, atol=1e-3)


def test_concurrent_clients_get_exactly_what_they_get_alone(client, app_url, served):
    from gradio_client import Client

    from sdviz.ui.runcache import RunCache

    requests = [("a photo of a dog", 1), ("a photo of a cabbage", 2), ("a photo of a bus", 3)]
    alone = [_run(client, p, seed=s)[1][2] for p, s in requests]
    served.app.live_runs = RunCache()  # live runs again, not replays of the runs above
    clients = [Client(app_url, verbose=False) for _ in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda a: _run(a[0], a[1][0], seed=a[1][1])[1][2], zip(clients, requests)))
    assert together == alone
    assert alone[0] != alone[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (("   ", 0, 3, 7.5), "prompt is empty"),
        (("a dog", 1.5, 3, 7.5), "seed must be a whole number"),
        (("a dog", "abc", 3, 7.5), "Expected a `float"),  # rejected by Gradio before our code, naming the value
        (("a dog", 0, 500, 7.5), "greater than maximum"),
        (("a dog", 0, 3, -1), "less than minimum"),
        (("x" * 2000, 0, 3, 7.5), "characters long"),
    ],
)
def test_bad_inputs_get_a_clear_message_and_the_app_keeps_serving(client, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/generate")
    assert _run(client, "a photo of a dog", steps=1)[1][1].startswith("**step 0 of 0**")


def test_long_emoji_non_latin_and_html_prompts_work_and_are_reported(client):
    long_prompt = "a photo of a dog " + "with a very long tail " * 20
    _, (_, _, decoded, status) = _run(client, long_prompt, steps=1)
    assert "CLIP reads only the first 77" in status and len(decoded) == 1
    for prompt in ("a photo of a 🐕 dog", "一只狗的照片", "<script>alert(1)</script> a dog"):
        _, (_, counter, decoded, _) = _run(client, prompt, steps=2)
        assert len(decoded) == 2


def test_cancelling_a_run_leaves_no_hooks_and_the_next_run_is_correct(client, tiny_pipe, served):
    import time

    job = client.submit("a photo of a dog", 0, 50, 7.5, api_name="/generate")
    time.sleep(1.0)
    job.cancel()
    time.sleep(1.0)
    pipe = served.app.pipe
    deadline = time.time() + 30
    while all_hooks(pipe.unet, pipe.text_encoder) and time.time() < deadline:
        time.sleep(0.2)
    assert all_hooks(pipe.unet, pipe.text_encoder) == 0
    _, (_, _, after, _) = _run(client, "a photo of a dog", seed=1, steps=3)
    _, (_, _, again, _) = _run(client, "a photo of a dog", seed=1, steps=3)
    assert after == again and len(after) == 3


@pytest.mark.browser
def test_real_browser_runs_a_prompt_and_shows_bars_image_and_maps(app_url, browser_page):
    with browser_page(1400, 1500) as page:
        page.goto(app_url, wait_until="domcontentloaded")  # gradio keeps a connection open: never "networkidle"
        page.locator("#tiny-banner").wait_for(timeout=30000)
        box = page.locator("#prompt textarea")
        box.fill("a photo of a dog")
        page.locator("#run").click()
        page.wait_for_function("document.querySelector('#counter')?.innerText.includes('step 19 of 19')", timeout=120000)
        page.locator("#bars .js-plotly-plot").wait_for(timeout=30000)
        page.locator("#image img").wait_for(timeout=30000)
        assert page.locator("#bars .js-plotly-plot .bars path").count() > 10
        assert page.locator("#closeness .js-plotly-plot").count() == 1
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / "generate.png"), full_page=True)
        page.get_by_role("tab", name="Maps").click()
        page.locator("#unet-map .js-plotly-plot").wait_for(timeout=30000)
        page.locator("#clip-map .js-plotly-plot").wait_for(timeout=30000)
        assert page.locator("#unet-map .js-plotly-plot .point, #unet-map canvas").count() > 0
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / "maps.png"), full_page=True)
        page.get_by_role("tab", name="Report").click()
        page.locator("#report-tab .js-plotly-plot").first.wait_for(timeout=30000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / "report.png"), full_page=True)
    assert (OUTPUT / "generate.png").stat().st_size > 20000


def _run_in_page(page, prompt: str, steps: int) -> None:
    page.locator("#run").wait_for(timeout=60000)
    page.wait_for_function("!document.querySelector('#run').disabled", timeout=120000)
    number = page.locator("#steps input[type=number]")
    if not number.is_visible():
        page.locator("#settings").get_by_text("Settings: seed, steps, guidance").click()
    page.locator("#prompt textarea").fill(prompt)
    # the slider takes the typed number before Run reads it (on a busy machine Run could go first, with the old steps);
    # a keystroke lost while the page is busy is typed again, then leaving the field commits it
    synced = f"document.querySelector('#steps input[type=range]')?.value === '{steps}'"
    for key in ("Enter", "Tab"):
        number.fill(str(steps))
        number.press(key)
        try:
            page.wait_for_function(synced, timeout=10000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try the other way of committing the number
            if key == "Tab":
                raise
    page.locator("#run").click()
    last = f"step {steps - 1} of {steps - 1}"  # at the start: the counter also names the probe's trained step
    page.wait_for_function(f"document.querySelector('#counter')?.innerText.startsWith('{last}')", timeout=120000)
    page.locator("#bars .js-plotly-plot").wait_for(timeout=30000)


@pytest.mark.browser
@pytest.mark.parametrize("width", [390, 768, 1400])
def test_every_screen_width_reads_cleanly_and_agrees_on_the_step(app_url, browser_page, width):
    with browser_page(width) as page:
        page.goto(app_url, wait_until="domcontentloaded")
        page.locator("#tiny-banner").wait_for(timeout=60000)
        _run_in_page(page, "a photo of a dog", 3)
        page.wait_for_timeout(600)
        # one step convention: counter, bar legend and scrubber all say step 2 (of 0..2)
        assert page.locator("#counter").inner_text().startswith("step 2 of 2")
        legend = " ".join(t.text_content() for t in page.locator("#bars .legendtext").all())
        assert "at step 2 of 2" in legend
        assert page.locator("#scrub input[type=number]").input_value() == "2"
        # the image is where the eye goes after Run: beside it, or on a phone right under it (within one screen)
        run_box, image_box = page.locator("#run").bounding_box(), page.locator("#image").bounding_box()
        assert abs(image_box["y"] - run_box["y"]) < 700
        # Stop is secondary: smaller than Run
        assert page.locator("#stop").bounding_box()["width"] < run_box["width"]
        for view in ("domain means", "all attributes"):
            page.get_by_label(view).check()
            page.wait_for_timeout(1200)
            page.screenshot(path=str(OUTPUT / f"generate-{width}-{view.split()[0]}.png"), full_page=True)
            ticks = page.locator("#bars .xtick text, #bars .ytick text").evaluate_all(LABEL_CORNERS)
            assert len(ticks) >= 10 and not overlaps(ticks), f"{view} at {width}px: axis labels overlap"
        page.get_by_label("domain means").check()
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"generate-{width}.png"), full_page=True)
        if width == 1400:  # the README's screenshot (assets/screenshot-generate.png is copied from it)
            _run_in_page(page, "a photo of a dog", 12)
            page.locator("#settings").get_by_text("Settings: seed, steps, guidance").click()  # close it again
            page.wait_for_timeout(1000)
            page.screenshot(path=str(OUTPUT / "screenshot-generate.png"), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1400, "height": 1350})
        page.get_by_role("tab", name="Maps").click()
        page.locator("#unet-map .js-plotly-plot").wait_for(timeout=30000)
        assert "step" in page.locator("#unet-map .gtitle").text_content()
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"maps-{width}.png"), full_page=True)
        page.get_by_role("tab", name="Report").click()
        page.locator("#report-fig-0 .js-plotly-plot").wait_for(timeout=30000)
        assert page.locator("#report-caption-0").inner_text().startswith("Figure 1.")
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"report-{width}.png"), full_page=True)
