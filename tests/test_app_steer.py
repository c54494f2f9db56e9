"""The Steer, Compare and CLIP-layers tabs (issue: beyond reading): the compare API through gradio_client, and
each tab run in a real browser at 390 and 1400 px, screenshots in test-output/steer-*.png, compare-*.png, lens-*.png.
SDVIZ_UPDATE_SCREENSHOT=1 also writes the README's assets/screenshot-steer.png."""

import os

import pytest
from conftest import OUTPUT, ROOT

README_SHOT = ROOT / "assets" / "screenshot-steer.png"


@pytest.fixture(scope="module")
def app_url(tiny_pipe, tiny_bundle, subset_csv, launch_app):
    with launch_app("tiny", "cpu", str(tiny_bundle), str(subset_csv)) as served:
        yield served.url


def test_compare_api_returns_both_images_and_the_distances_step_by_step(app_url):
    from gradio_client import Client

    from sdviz.compare import compare
    from sdviz.models import load_pipeline

    client = Client(app_url, verbose=False)
    gallery, strip, summary, _, _, _, distances = client.predict("a photo of a violin", "a photo of a trumpet", 0, 3,
                                                          api_name="/compare")
    assert len(gallery) == 2 and len(strip["value"]) == 6 and "CLIP keeps the two prompts" in summary  # 3 steps each
    assert len(distances["unet.mid"]) == 3 and len(distances["clip.cond"]) == 1
    # the same numbers as the library
    mine = compare(load_pipeline("tiny", device="cpu"), "a photo of a violin", "a photo of a trumpet", seed=0, steps=3)
    assert distances["unet.mid"] == pytest.approx(mine.distance["unet.mid"], abs=1e-5)
    with pytest.raises(Exception, match="prompt is empty"):
        client.predict("", "a photo of a trumpet", 0, 3, api_name="/compare")


def _open_tab(page, name: str) -> None:
    """A tab by name; on a phone the later tabs sit in Gradio's "..." overflow menu."""
    page.get_by_role("tab", name="Generate").wait_for(timeout=30000)  # the tab bar is drawn
    page.wait_for_timeout(300)
    tab = page.get_by_role("tab", name=name)
    if not tab.is_visible():
        page.locator(".overflow-menu button").first.click()
        tab = page.locator(".overflow-dropdown button", has_text=name)
    tab.click()


@pytest.mark.browser
@pytest.mark.parametrize("width", [390, 1400])
def test_steer_compare_and_clip_layers_run_in_the_browser(app_url, browser_page, width):
    with browser_page(width) as page:
        page.goto(app_url, wait_until="domcontentloaded")
        page.wait_for_function("!document.querySelector('#run button, #run')?.disabled", timeout=120000)

        _open_tab(page, "Steer")
        page.wait_for_function("document.querySelector('#steer-attribute input')?.value === 'Loud'", timeout=30000)
        page.locator("#steer-run").click()
        page.locator("#steer-figure .js-plotly-plot").wait_for(timeout=120000)
        assert "Loud pushed by +2" in page.locator("#steer-summary").inner_text()
        assert page.locator("#steer-images img").count() >= 2
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"steer-{width}.png"), full_page=True)
        if width == 1400 and os.environ.get("SDVIZ_UPDATE_SCREENSHOT") == "1":
            page.screenshot(path=str(README_SHOT), full_page=True)

        _open_tab(page, "Compare")
        page.locator("#compare-run").click()
        page.locator("#compare-distance .js-plotly-plot").wait_for(timeout=120000)
        page.locator("#compare-map .js-plotly-plot").wait_for(timeout=30000)
        assert "CLIP keeps the two prompts" in page.locator("#compare-summary").inner_text()
        assert page.locator("#compare-strip img").count() >= 2
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"compare-{width}.png"), full_page=True)

        _open_tab(page, "CLIP layers")
        page.locator("#lens-run").click()
        page.locator("#lens-figure .js-plotly-plot").wait_for(timeout=120000)
        assert "layer" in page.locator("#lens-summary").inner_text()
        assert page.locator("#lens-images img").count() >= 5  # the tiny CLIP: embeddings + 4 layers
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUTPUT / f"lens-{width}.png"), full_page=True)
