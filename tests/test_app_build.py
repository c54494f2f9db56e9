"""First contact: no bundle, ratings at hand. The app serves, builds the probes in the background with a
progress bar, and bars, maps and report appear without a reload (a real browser)."""

import json

import pytest
from conftest import OUTPUT


@pytest.mark.browser
def test_the_app_builds_a_missing_bundle_and_shows_it_without_a_reload(subset_csv, tmp_path, launch_app, browser_page):
    bundle = tmp_path / "probes" / "tiny"
    with launch_app("tiny", "cpu", str(bundle), str(subset_csv), build_cache=str(tmp_path / "cache")) as served:
        with browser_page(1400, 1100) as page:
            page.goto(served.url, wait_until="domcontentloaded")
            progress = page.locator("#build-progress")
            progress.wait_for(timeout=120000)
            from sdviz.ui.state import AUTO_BUILD

            assert "Building the probes" in progress.inner_text() and f"{AUTO_BUILD['steps']} steps" in progress.inner_text()
            assert page.locator("#build-progress progress").count() == 1
            page.screenshot(path=str(OUTPUT / "build-progress.png"), full_page=True)
            progress.wait_for(state="hidden", timeout=600000)  # the build is done: the poll hides it
            assert served.app.bundle is not None, served.app.build_error
            page.locator("#block input").wait_for(timeout=30000)
            page.locator("#prompt textarea").fill("a photo of a dog")
            page.locator("#run").click()
            page.wait_for_function("document.querySelector('#counter')?.innerText.includes('step 19 of 19')", timeout=180000)
            page.locator("#bars .js-plotly-plot").wait_for(timeout=30000)
            page.screenshot(path=str(OUTPUT / "build-bars.png"), full_page=True)
            page.get_by_role("tab", name="Maps").click()
            page.locator("#unet-map .js-plotly-plot").wait_for(timeout=30000)
            page.wait_for_timeout(1000)
            names = " ".join(t.text_content() for t in page.locator("#unet-map .legendtext").all())
            assert "'a photo of a dog'" in names  # the star, named after the prompt
            page.screenshot(path=str(OUTPUT / "build-maps.png"), full_page=True)
            page.get_by_role("tab", name="Report").click()
            page.locator("#report-fig-0 .js-plotly-plot").wait_for(timeout=30000)
            assert "Built automatically with reduced settings" in page.locator("#report-tab").inner_text()
            page.screenshot(path=str(OUTPUT / "build-report.png"), full_page=True)
    settings = json.loads((bundle / "report.json").read_text())["settings"]
    assert settings["automatic"] is True and settings["permutations"] == AUTO_BUILD["permutations"] == 20
    assert json.loads((bundle / "meta.json").read_text())["steps"] == AUTO_BUILD["steps"] == 8
