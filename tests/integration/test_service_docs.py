"""/docs works on a box without internet: Debian's chromium, driven by Playwright, with every
request that is not to the service refused (and DNS for any other host failing), lists both
endpoints and serves "Try it out" with an image file. The screenshot goes to build/service-docs.png
(and to docs/service-docs.png, docs/service.md's, when that is missing or DEFECT_UPDATE_DOCS=1)."""
import json
import os
import subprocess
from urllib.parse import urlparse

import pytest
from PIL import Image

from core.model_host import ModelHost
from tests.support.paths import REPO, fixture_path
from tests.support.service_process import HOST, running_service

pytestmark = pytest.mark.timeout(600)

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = os.path.join(REPO, "build", "service-docs.png")
README_SCREENSHOT = os.path.join(REPO, "docs", "service-docs.png")


@pytest.fixture(scope="module")
def chromium():
    result = subprocess.run(["bash", os.path.join(REPO, "tools", "system_deps.sh"), "chromium"],
                            capture_output=True, text=True)
    if result.returncode != 0 or not os.path.exists(CHROMIUM):
        pytest.fail(f"Debian's chromium is needed (tools/system_deps.sh chromium): {result.stderr.strip()}")
    return CHROMIUM


def test_docs_lists_both_endpoints_and_try_it_out_answers_offline(chromium, settings, tmp_path):
    from playwright.sync_api import sync_playwright

    parrot = fixture_path("images", "parrot.jpg")
    reference = ModelHost(settings, workers=1)
    reference.start_loading()
    assert reference.wait_loaded(120) and reference.ready()
    with open(parrot, "rb") as f:
        expected = reference.call("labelImage", f.read(), 3)

    seen, refused = [], []

    def only_the_service(route):
        url = route.request.url
        seen.append(url)
        if urlparse(url).hostname == HOST or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    with running_service() as service, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True,
            # No network below the page either: every other host name fails to resolve.
            args=[f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}", "--disable-background-networking"])
        try:
            page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
            page.route("**/*", only_the_service)
            page.goto(f"http://{HOST}:{service.http_port}/docs")
            summaries = page.locator(".opblock-summary-path")
            summaries.first.wait_for(timeout=30_000)
            paths = summaries.all_inner_texts()
            assert {"/analyze/labelImage", "/analyze/inference"} <= {p.replace("\u200b", "") for p in paths}, paths

            block = page.locator(".opblock", has=page.locator(".opblock-summary-path[data-path='/analyze/labelImage']"))
            block.locator(".opblock-summary").first.click()
            block.get_by_role("button", name="Try it out").click()
            block.locator(".body-param-content-type select, .content-type-wrapper select").first.select_option(
                "multipart/form-data")
            block.locator("input[type=file]").first.set_input_files(parrot)
            k_field = block.locator("tr[data-property-name='k'] input[type=text]")  # the form's, not the query's
            assert k_field.input_value() == "5"
            k_field.fill("3")
            block.get_by_role("button", name="Execute").click()
            status = block.locator(".live-responses-table tbody .response-col_status").first
            status.wait_for(timeout=60_000)
            assert status.inner_text().strip().startswith("200"), block.inner_text()
            answer = block.locator(".live-responses-table tbody .response-col_description pre").first.inner_text()
            assert json.loads(answer) == expected
            assert expected[0]["label"] == "89:macaw"
            # The operation from its title down to the live answer (the declared responses below are left out).
            top, bottom = block.bounding_box(), block.locator(".live-responses-table").first.bounding_box()
            os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
            page.screenshot(path=SCREENSHOT, full_page=True, clip={
                "x": top["x"], "y": top["y"], "width": top["width"],
                "height": bottom["y"] + bottom["height"] - top["y"] + 8})
        finally:
            browser.close()

    assert not refused, f"requests that left {HOST}: {refused}"
    assert any(url.endswith("/openapi.json") for url in seen) and any("/analyze/labelImage" in u for u in seen)
    if os.environ.get("DEFECT_UPDATE_DOCS") or not os.path.exists(README_SCREENSHOT):
        os.makedirs(os.path.dirname(README_SCREENSHOT), exist_ok=True)
        # A 64-colour palette: the page is flat colours and text, and docs/service.md's copy stays small.
        Image.open(SCREENSHOT).convert("RGB").quantize(64).save(README_SCREENSHOT, optimize=True)
