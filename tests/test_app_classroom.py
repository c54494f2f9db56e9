"""A class served by the server itself (issue 17): identical live requests replayed from the live-run cache, the
line for the model with each visitor's place and estimate, and what every visitor sees alike made once.
Timings are never asserted here: `python -m sdviz.bench classroom --clients 30` measures them."""

import threading

import numpy as np
import pytest
from conftest import OUTPUT
from PIL import Image

from sdviz.ui.line import ModelLine, Waiting, wait_seconds, waiting_counter, waiting_text
from sdviz.ui.runcache import RunCache


# -- the line and its estimate: plain functions ------------------------------------------------------------------
def test_the_wait_is_the_measured_step_time_times_the_steps_ahead():
    assert wait_seconds(3 * 20, 0.25) == pytest.approx(15.0)  # 3 people ahead, 20 steps each, 0.25 s a step
    assert wait_seconds(0, 0.25) is None  # nobody ahead: no wait to announce
    assert wait_seconds(40, None) is None  # nothing measured yet: no made-up number
    text = waiting_text(Waiting(place=4, steps_ahead=60), 0.25)
    assert "number 4 in line" in text and "3 runs are ahead" in text and "about 15 s" in text
    assert "1 run is ahead" in waiting_text(Waiting(place=2, steps_ahead=20), 0.25)
    assert "once this app has timed a run" in waiting_text(Waiting(place=2, steps_ahead=20), None)
    assert waiting_counter(Waiting(place=4, steps_ahead=60), 0.25) == "⏳ **number 4 in line** for the model · about 15 s"


def test_the_line_is_first_come_first_served():
    line = ModelLine()
    a, b, c = line.join(20), line.join(10), line.join(5)
    assert [line.ahead(t) for t in (a, b, c)] == [Waiting(1, 0), Waiting(2, 20), Waiting(3, 30)]
    assert line.wait(a, timeout=0) and not line.wait(b, timeout=0.01)
    done = []
    waiter = threading.Thread(target=lambda: done.append(line.wait(c, timeout=10)))
    waiter.start()
    line.leave(a)
    assert line.ahead(c) == Waiting(2, 10) and line.wait(b, timeout=0)
    line.leave(b)
    waiter.join()
    assert done == [True] and len(line) == 1
    line.leave(c)
    assert len(line) == 0


def test_holding_runs_in_turn():
    line, order = ModelLine(), []
    first = line.join(20)
    held = line.holding(lambda x: order.append(x) or x, steps_of=lambda x: 7)
    worker = threading.Thread(target=held, args=("steer",))
    worker.start()
    worker.join(0.2)
    assert order == [] and line.ahead(line.join(1)).steps_ahead == 27  # it waits behind the first, counted 7 steps
    line.leave(first)
    worker.join(10)
    assert order == ["steer"]


# -- the live-run cache: bounded ----------------------------------------------------------------------------------
def _records(pipe, seed):
    from sdviz.run import stream

    return list(stream(pipe, "a photo of a dog", seed=seed, steps=2))


def test_the_live_run_cache_keeps_the_most_recent_runs_within_its_bounds(tiny_pipe):
    cache = RunCache(max_runs=2)
    runs = {seed: _records(tiny_pipe, seed) for seed in range(3)}
    kept = {seed: cache.put(("k", seed), tiny_pipe, runs[seed], prompt="a photo of a dog", seed=seed, steps=2, guidance=7.5)
            for seed in (0, 1)}
    assert cache.get(("k", 0)) is kept[0]  # 0 is now the most recently used: 1 goes first
    cache.put(("k", 2), tiny_pipe, runs[2], prompt="a photo of a dog", seed=2, steps=2, guidance=7.5)
    assert len(cache) == 2 and cache.get(("k", 1)) is None and cache.get(("k", 0)) is kept[0]
    assert not kept[1].path.exists(), "a dropped run leaves nothing on disk"
    replayed = list(kept[0].records())
    assert [np.array_equal(np.asarray(a.preview), np.asarray(b.preview)) for a, b in zip(replayed, runs[0])] == [True, True]
    assert all(bool((a.features[n] == b.features[n]).all()) for a, b in zip(replayed, runs[0]) for n in a.features)

    one = cache.bytes // 2  # bytes: a budget of about one run keeps only the newest
    small = RunCache(max_bytes=one + one // 2)
    for seed in range(3):
        small.put(("k", seed), tiny_pipe, runs[seed], prompt="a photo of a dog", seed=seed, steps=2, guidance=7.5)
    assert len(small) == 1 and small.get(("k", 2)) is not None and small.bytes <= one + one // 2


# -- the app: identical requests replayed, the line shown ---------------------------------------------------------
@pytest.fixture(scope="module")
def served(tiny_bundle, subset_csv, launch_app):
    with launch_app("tiny", "cpu", str(tiny_bundle), str(subset_csv)) as served:
        served.app.wait_ready()
        calls = []
        live = served.app.gpu_steps

        def counted(*args):  # every denoising run the app starts
            calls.append(args)
            return live(*args)

        served.app.gpu_steps = counted
        served.calls = calls
        yield served


def _generate(client, seed, steps=3):
    job = client.submit("a photo of a dog", seed, steps, 7.5, api_name="/generate")
    list(job)
    image, counter, decoded, status = job.outputs()[-1]
    return np.asarray(Image.open(image)), decoded, status


def test_an_identical_request_is_replayed_without_a_second_run(served):
    from gradio_client import Client

    client = Client(served.url, verbose=False)
    before = len(served.calls)
    image, decoded, status = _generate(client, seed=5)
    assert len(served.calls) == before + 1 and "replayed" not in status
    again, decoded_again, status_again = _generate(Client(served.url, verbose=False), seed=5)  # another visitor
    assert len(served.calls) == before + 1, "the identical request ran the model again"
    assert status_again.startswith("⚡ **replayed**")
    assert np.array_equal(image, again) and decoded_again == decoded  # bit for bit: pixels and every decoded value
    other, _, status_other = _generate(client, seed=6)  # another seed: a real run
    assert len(served.calls) == before + 2 and "replayed" not in status_other and not np.array_equal(other, image)


def test_a_visitor_waiting_for_the_model_sees_their_place_and_an_estimate(served):
    from gradio_client import Client

    app = served.app
    app.step_seconds = 0.5
    ahead = app.line.join(10)  # someone else's 10-step run holds the model
    try:
        job = Client(served.url, verbose=False).submit("a photo of a cat", 1, 3, 7.5, api_name="/generate")
        first = next(iter(job))
        assert "number 2 in line" in first[3] and "1 run is ahead" in first[3]
        assert "about 5 s" in first[3]  # 10 steps ahead x 0.5 s measured per step
        assert not job.done()
    finally:
        app.line.leave(ahead)
    list(job)
    assert job.outputs()[-1][1].startswith("**step 2 of 2**")


def test_what_every_visitor_sees_alike_is_made_once(served, monkeypatch):
    """Thirty visitors opening the Maps tab at once: its figures are made once and the same JSON goes to each."""
    import sdviz.plots as plots

    app = served.app
    block = app.map_names()[1]  # not the default block, which the bundle's load already prepared
    made = []
    real = plots.embedding_map_animation
    monkeypatch.setattr(plots, "embedding_map_animation", lambda *a, **k: made.append(1) or real(*a, **k))
    results = [None] * 30

    def visit(i):
        results[i] = app.render_maps(block, [])

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1
    assert len({id(r[1]["value"]) for r in results}) == 1 and '"frames"' in results[0][1]["value"].plot
    report = app.render_report()
    assert all(not hasattr(u.get("value"), "to_json") for u in report[1:] if isinstance(u, dict))  # serialised once


@pytest.mark.browser
def test_the_place_in_line_shows_on_a_phone(served, browser_page):
    app = served.app
    app.step_seconds = 0.5
    with browser_page(390, 844) as page:
        page.goto(served.url, wait_until="domcontentloaded")
        page.locator("#run:not([disabled])").wait_for(timeout=60000)
        page.locator("#prompt textarea").fill("a photo of a horse")
        ahead = app.line.join(20)
        try:
            page.locator("#run").click()
            page.wait_for_function("document.querySelector('#status')?.innerText.includes('number 2 in line')",
                                   timeout=30000)
            assert "about 10 s" in page.locator("#status").inner_text()
            page.wait_for_function("document.querySelector('#counter')?.innerText.includes('number 2 in line')",
                                   timeout=30000)  # also under the image, where the visitor looks after Run
            assert "about 10 s" in page.locator("#counter").inner_text()
            page.screenshot(path=str(OUTPUT / "classroom-waiting-390.png"), full_page=True)
        finally:
            app.line.leave(ahead)
        page.wait_for_function("document.querySelector('#counter')?.innerText.includes('of 19')", timeout=60000)
