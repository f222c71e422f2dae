"""``nttt serve`` in a real browser: Debian's Chromium, headless, driven by Playwright, tiny random models.

Makes a reference with a click (and a box), adds it, segments two images, moves the score slider (no
recomputation), and downloads the COCO results and the memory. Skipped only when no browser can be run here
(the ``chromium`` binary or the ``playwright`` package is missing; ``make test`` installs both) or the
``app`` extra (Gradio) is not installed.

Screenshots go to ``$NTTT_APP_SCREENSHOTS`` when set (``NTTT_APP_SCREENSHOTS=docs`` refreshes the README's
pictures), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium binary (Debian package 'chromium'; 'make test' installs it when apt is usable)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the 'playwright' package is not installed")
pytest.importorskip("gradio", reason="the 'app' extra (Gradio) is not installed: pip install -e '.[app]'")

from no_time_to_train.app.server import build_app, launch  # noqa: E402
from no_time_to_train.memory import ReferenceMemory  # noqa: E402

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.filterwarnings(  # pandas 3 deprecations inside Gradio's queue, not ours
    "ignore:'future.no_silent_downcasting' is deprecated", "ignore:The copy keyword is deprecated")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app(make_segmenter, tmp_path):
    seg = make_segmenter()
    predicts = []
    predict = seg.predict
    seg.predict = lambda image: predicts.append(1) or predict(image)
    demo = build_app(seg, workdir=tmp_path / "work", score_threshold=0.3)
    port = _free_port()
    launch(demo, port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}", demo.workspace, predicts
    finally:
        demo.close()


@pytest.fixture
def page():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            pg = context.new_page()
            pg.set_default_timeout(TIMEOUT_MS)
            yield pg
        finally:
            browser.close()


def _shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("NTTT_APP_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _screenshot(page, path: Path) -> None:
    """A full-page screenshot without the notification toasts, reduced to 256 colours (for the README)."""
    page.evaluate("""() => { const s = document.createElement('style'); s.id = 'no-toasts';
        s.textContent = '.toast-wrap { display: none !important; }'; document.head.appendChild(s); }""")
    page.screenshot(path=str(path), full_page=True)
    page.evaluate("() => document.getElementById('no-toasts').remove()")
    Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def _click_image(page, fx: float, fy: float) -> None:
    """Click the reference image at a fraction of its displayed size, once the shown picture has loaded
    (each click's answer replaces it; a click during the swap would be lost)."""
    page.wait_for_function("""() => { const i = document.querySelector('#ref-image img');
        return i !== null && i.complete && i.naturalWidth > 0; }""")
    img = page.locator("#ref-image img").first
    box = img.bounding_box()
    img.click(position={"x": box["width"] * fx, "y": box["height"] * fy})


def _set_threshold(page, value: float) -> None:
    field = page.locator("#threshold input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def _download(page, button: str, file_component: str) -> Path:
    page.locator(button).click()
    link = page.locator(f"{file_component} a").first
    link.wait_for()
    with page.expect_download() as info:
        link.click()
    return Path(info.value.path())


def test_browser_references_segment_export(app, page, coco_mini, tmp_path):
    expect = sync_api.expect
    expect.set_options(timeout=TIMEOUT_MS)
    url, ws, predicts = app
    shots = _shots(tmp_path)
    page.goto(url)

    # -- references ------------------------------------------------------------------------------------
    page.locator("#add-reference").click()  # nothing yet: an error in the page, the app stays alive
    expect(page.get_by_text("name the category before adding the reference").first).to_be_visible()

    page.locator("#ref-image input[type=file]").set_input_files(str(coco_mini / "train2017" / "000000000790.jpg"))
    info = page.locator("#draft-info")
    expect(info).to_contain_text("000000000790.jpg (640x422)")
    src_before = page.locator("#ref-image img").first.get_attribute("src")
    _click_image(page, 0.5, 0.5)
    expect(info).to_contain_text("SAM2 mask from 1 positive / 0 negative point(s)")
    expect(page.locator("#ref-image img").first).not_to_have_attribute("src", src_before)  # the overlay is shown
    assert len(ws.results) == 0

    page.locator("#category input, #category textarea").first.fill("thing")
    page.locator("#add-reference").click()
    expect(page.locator("#memory-summary")).to_contain_text("1 reference(s) in 1 category: thing: 1")
    expect(page.locator("#ref-gallery img")).to_have_count(1)
    assert ws.memory.counts() == {"thing": 1} and ws.memory.references[0]["prompt"] == "points"

    # a box from two corner clicks, shown live (not added: the screenshot shows a draft in progress)
    page.get_by_label("Box (two corners)").check()
    _click_image(page, 0.15, 0.2)
    expect(info).to_contain_text("click the opposite corner")
    _click_image(page, 0.6, 0.85)
    expect(info).to_contain_text("SAM2 mask from box")
    _screenshot(page, shots / "app-references.png")

    # -- segment ---------------------------------------------------------------------------------------
    page.get_by_role("tab", name="2. Segment").click()
    page.locator("#targets input[type=file]").set_input_files(
        [str(coco_mini / "val2017" / name) for name in ("000000000139.jpg", "000000000802.jpg")])
    expect(page.locator("#targets")).to_contain_text("000000000802")
    page.locator("#segment").click()
    status = page.locator("#segment-status")
    expect(status).to_contain_text("2 image(s)")
    assert len(predicts) == 2
    shown, total = ws.counts(0.3)
    assert total > 0
    expect(status).to_contain_text(f"{shown} of {total} detection(s) score above 0.30")
    expect(page.locator("#overlays img")).to_have_count(2)

    _set_threshold(page, 0)
    expect(status).to_contain_text(f"{total} of {total} detection(s) score above 0.00")
    # Gradio's table is virtualised (rows outside the view are not in the DOM): count by aria-rowcount
    expect(page.locator("#detections [role=grid]")).to_have_attribute("aria-rowcount", str(total + 1))
    expect(page.locator("#detections")).to_contain_text("000000000139.jpg")
    _set_threshold(page, 0.99)
    expect(status).to_contain_text(f"{ws.counts(0.99)[0]} of {total} detection(s) score above 0.99")
    _set_threshold(page, 0)
    expect(status).to_contain_text("score above 0.00")
    assert len(predicts) == 2  # the slider filtered the cached detections
    _screenshot(page, shots / "app-segment.png")

    # -- review: accept the first image's detection with a click, re-segment, see what changed ---------
    d = ws.results[0].detections
    inner = d.masks[0] & ~d.masks[d.scores > d.scores[0]].any(axis=0)
    for _ in range(12):  # a pixel well inside the mask: the page's click mapping may be a few pixels off
        shrunk = inner[1:-1, 1:-1] & inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]
        if not shrunk.any():
            break
        inner = np.pad(shrunk, 1)
    ys, xs = np.nonzero(inner)
    page.wait_for_function("""() => { const i = document.querySelector('#review-image img');
        return i !== null && i.complete && i.naturalWidth > 0; }""")
    img = page.locator("#review-image img").first
    box = img.bounding_box()
    h, w = ws.results[0].image.shape[:2]
    page.get_by_label("Accept (positive reference)").check()  # Gradio maps a click by the element's size
    img.click(position={"x": (xs[len(xs) // 2] + 0.5) * box["width"] / w,
                        "y": (ys[len(ys) // 2] + 0.5) * box["height"] / h})
    expect(page.locator("#review-info")).to_contain_text("accepted thing")
    assert ws.results[0].decisions == {0: "accepted"} and ws.memory.counts() == {"thing": 2}
    page.locator("#resegment").click()
    expect(page.locator("#review-info")).to_contain_text("Re-segmented: 000000000139.jpg +")
    assert len(predicts) == 4
    page.locator("#review").scroll_into_view_if_needed()
    _screenshot(page, shots / "app-review.png")
    total = ws.counts(0.0)[1]  # the re-segmented results are the ones exported
    ws.remove_reference(1)  # back to the one reference the rest of the test expects

    # -- export ----------------------------------------------------------------------------------------
    page.get_by_role("tab", name="3. Export / load").click()
    results = json.loads(_download(page, "#export-results", "#results-file").read_text())
    assert isinstance(results, list) and len(results) == total
    assert {r["file_name"] for r in results} <= {"000000000139.jpg", "000000000802.jpg"}
    assert all(r["category_name"] == "thing" and len(r["bbox"]) == 4 for r in results)

    memory_file = _download(page, "#save-memory", "#memory-file")
    assert ReferenceMemory.load(memory_file).counts() == {"thing": 1}
    saved = tmp_path / "saved.safetensors"
    shutil.copy(memory_file, saved)

    # -- an uploaded mask, removing a reference, loading a memory, removing a category -----------------
    page.get_by_role("tab", name="1. References").click()
    mask = np.zeros((422, 640), np.uint8)
    mask[100:300, 200:450] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    summary = page.locator("#memory-summary")

    def add_uploaded_mask():
        with page.expect_file_chooser() as chooser:
            page.locator("#mask-upload").click()
        chooser.value.set_files(str(tmp_path / "mask.png"))
        expect(info).to_contain_text("Uploaded mask: 50000 px")
        page.locator("#category input, #category textarea").first.fill("other")
        page.locator("#add-reference").click()
        expect(summary).to_contain_text("2 reference(s) in 2 categories")

    add_uploaded_mask()
    assert ws.memory.references[1]["prompt"] == "upload"
    page.locator("#ref-gallery img").nth(1).click()
    expect(page.locator("#selected-reference")).to_contain_text("Selected: other #1")
    page.locator("#remove-reference").click()
    expect(summary).to_contain_text("1 reference(s) in 1 category: thing: 1")
    assert ws.categories == ["thing"]
    add_uploaded_mask()

    page.get_by_role("tab", name="3. Export / load").click()
    page.locator("#load-memory input[type=file]").set_input_files(str(saved))
    expect(summary).to_contain_text("1 reference(s) in 1 category: thing: 1")  # the saved memory is back
    assert ws.memory.counts() == {"thing": 1}

    page.get_by_role("tab", name="1. References").click()
    page.locator("#remove-category").click()  # the dropdown shows the first category, "thing"
    expect(summary).to_contain_text("The memory is empty")
    assert len(ws.memory) == 0
