"""A real browser against a real server: `streamlit run app.py`, driven in Debian's Chromium.

Uploads a photo, visits every page in both languages through the sidebar (one session per language,
so the upload must persist across pages), checks that charts rendered and no error is shown, and
keeps a full-page screenshot of each under test-artifacts/browser/.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vit_core.i18n import translate

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
PAGES = [  # (url path, translation area of the page, its navigation label)
    ("home", "home", "app.nav.home"), ("step1_patchify", "step1", "app.nav.step1"),
    ("step2_project", "step2", "app.nav.step2"), ("step3_position", "step3", "app.nav.step3"),
    ("step4_cls", "step4", "app.nav.step4"), ("step5_encoder", "step5", "app.nav.step5"),
    ("step6_classify", "step6", "app.nav.step6"), ("rollout_lab", "rollout", "app.nav.rollout"),
    ("cnn_vs_vit", "cnn", "app.nav.cnn"), ("exp_position", "exp.position", "exp.nav.position"),
    ("exp_logit_lens", "exp.lens", "exp.nav.lens"), ("exp_occlusion", "exp.occlusion", "exp.nav.occlusion"),
    ("exp_windows", "exp.windows", "exp.nav.windows"), ("exp_finetune", "exp.finetune", "exp.nav.finetune"),
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHOTO = ROOT / "assets" / "samples" / "photo_chelsea.jpg"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("VIT_EXPLORER_MODEL", None)  # the embedded default, as a fresh server has it
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
                             "--server.headless", "true"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start:\n" + proc.stdout.read())
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        log = proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        log = proc.communicate()[0]
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_for_page(page, title: str):
    page.wait_for_selector(f'[data-testid="stMain"] h1:has-text("{title}")', timeout=180_000)
    page.wait_for_selector('[data-testid="stMain"] .js-plotly-plot', timeout=180_000)
    # the run is over when the app root says so (the status widget's button can be gone before the end)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=180_000)
    time.sleep(1.0)  # let plotly finish drawing before the screenshot


def assert_no_failure(page, where: str):
    assert page.locator('[data-testid="stException"]').count() == 0, f"traceback on {where}"
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, f"error on {where}: {errors.all_inner_texts()}"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_upload_then_visit_every_page(server, browser, lang):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 3200})
    page.goto(f"{server}/?lang={lang}")
    wait_for_page(page, translate("home.title", lang))

    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text(translate("app.image.upload", lang), exact=True).click()
    sidebar.locator('input[type="file"]').set_input_files(str(PHOTO))
    sidebar.get_by_text(PHOTO.name).last.wait_for(timeout=60_000)  # the caption under the picture in use
    wait_for_page(page, translate("home.title", lang))

    for url, area, nav in PAGES:
        sidebar.locator('[data-testid="stSidebarNav"]').get_by_text(translate(nav, lang), exact=True).click()
        wait_for_page(page, translate(f"{area}.title", lang))
        assert_no_failure(page, f"{url} ({lang})")
        assert page.locator('[data-testid="stMain"] .js-plotly-plot').count() >= 1
        assert sidebar.get_by_text(PHOTO.name).count() >= 1, "the uploaded image persists across pages"
        page.screenshot(path=str(ARTIFACTS / f"{lang}_{url}.png"), full_page=True)
    page.close()


def test_a_broken_upload_is_a_translated_message(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(f"{server}/?lang=zh")
    wait_for_page(page, translate("home.title", "zh"))
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text(translate("app.image.upload", "zh"), exact=True).click()
    sidebar.locator('input[type="file"]').set_input_files(
        files=[{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8\xff\xe0 not really a jpeg"}])
    alert = sidebar.locator('[data-testid="stAlertContentError"]')
    alert.wait_for(timeout=60_000)
    assert "图片" in alert.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "zh_broken_upload.png"))
    page.close()


CLICK_POINT = """([r, c]) => {
  // the screen position of the patch-centre marker (r, c) of the first clickable image chart;
  // the markers are laid out row by row (viz.common._patch_centres)
  const gd = [...document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')]
    .find(g => g._fullData.some(d => d.type === 'scatter' && d.customdata));
  const trace = gd._fullData.find(d => d.type === 'scatter' && d.customdata);
  const w = new Set(Array.from(trace.x)).size, i = r * w + c;
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  return [box.left + xa._offset + xa.l2p(trace.x[i]), box.top + ya._offset + ya.l2p(trace.y[i])];
}"""


def test_clicking_a_patch_selects_it_on_every_page(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(f"{server}/step1_patchify?lang=en")
    wait_for_page(page, translate("step1.title", "en"))
    rows = page.locator('[data-testid="stMain"] [data-testid="stNumberInput"] input')
    assert (rows.nth(0).input_value(), rows.nth(1).input_value()) == ("3", "3")  # the centre of 7×7
    x, y = page.evaluate(CLICK_POINT, [1, 5])
    page.mouse.click(x, y)
    page.wait_for_function("""() => { const i = document.querySelectorAll(
        '[data-testid="stMain"] [data-testid="stNumberInput"] input'); return i[0].value === '1' && i[1].value === '5'; }""",
                           timeout=60_000)
    assert_no_failure(page, "step1 after a click")
    page.locator('[data-testid="stSidebarNav"]').get_by_text(translate("app.nav.step5", "en"), exact=True).click()
    wait_for_page(page, translate("step5.title", "en"))
    rows = page.locator('[data-testid="stMain"] [data-testid="stNumberInput"] input')
    assert (rows.nth(0).input_value(), rows.nth(1).input_value()) == ("1", "5"), "the selection follows to step 5"
    page.screenshot(path=str(ARTIFACTS / "en_step5_after_click.png"))
    page.close()
