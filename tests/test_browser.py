"""A real browser against a real server: `streamlit run app.py`, driven in Debian's Chromium.

Uploads a photo, visits every page in both languages through the sidebar (one session per language,
so the upload must persist across pages), checks that charts rendered and no error is shown, and
keeps a full-page screenshot of each under test-artifacts/browser/.
"""

import contextlib
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
    ("cnn_vs_vit", "cnn", "app.nav.cnn"), ("classroom", "classroom", "classroom.nav"),
    ("exp_position", "exp.position", "exp.nav.position"), ("exp_logit_lens", "exp.lens", "exp.nav.lens"),
    ("exp_finetune", "exp.finetune", "exp.nav.finetune"),
]
TIMEOUT_MS = int(os.environ.get("VX_BROWSER_TIMEOUT_MS", 180_000))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHOTO = ROOT / "assets" / "samples" / "photo_chelsea.jpg"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def free_port() -> int:
    """A free loopback port, in $VX_TEST_PORTS when that is set (a shared machine gives each person a range)."""
    if os.environ.get("VX_TEST_PORTS"):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from stclient import free_ports

        return free_ports(1)[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A Hugging Face cache holding one catalogue model (a small random DeiT in the hub's real layout)."""
    from test_hub import ENTRY, make_hf_cache, tiny_deit_files

    root = tmp_path_factory.mktemp("hf")
    make_hf_cache(root / "cache", ENTRY.repo, tiny_deit_files(root / "files"))
    return root / "cache"


@contextlib.contextmanager
def streamlit_server(env: dict, port: int | None = None):
    """`streamlit run app.py` with `env` on `port` (a free one if None): yields its address; at the end
    stops it and fails if its log holds a traceback."""
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium)")
    port = port or free_port()
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
def server(hub_cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    env.pop("VIT_EXPLORER_MODEL", None)  # the embedded default, as a fresh server has it
    with streamlit_server(env) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_for_page(page, title: str):
    try:
        page.wait_for_selector(f'[data-testid="stMain"] h1:has-text("{title}")', timeout=TIMEOUT_MS)
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "timeout.png"))  # what the page showed instead
        raise
    page.wait_for_selector('[data-testid="stMain"] .js-plotly-plot', timeout=TIMEOUT_MS)
    # the run is over when the app root says so (the status widget's button can be gone before the end)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=TIMEOUT_MS)
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


def switch_language(page, sidebar, lang: str, title_key: str):
    sidebar.get_by_text({"en": "English", "zh": "简体中文"}[lang], exact=True).click()
    wait_for_page(page, translate(title_key, lang))


@pytest.mark.parametrize("with_upload_and_hub_model", [False, True])
def test_switching_the_language_then_navigating(server, browser, with_upload_and_hub_model):
    """English → 中文 → English on every page, each switch followed by a click in the navigation: the
    browser then sends the sample and model lists' old labels, which used to be opened as a file name."""
    from test_hub import ENTRY

    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(f"{server}/?lang=en")
    wait_for_page(page, translate("home.title", "en"))
    sidebar = page.locator('[data-testid="stSidebar"]')
    if with_upload_and_hub_model:
        sidebar.locator('[data-testid="stSelectbox"]').first.click()
        page.get_by_role("option", name=translate("app.model.kind.hub", "en", title=ENTRY.title)).click()
        sidebar.get_by_text(ENTRY.title).last.wait_for(timeout=60_000)  # the caption of the model in use
        wait_for_page(page, translate("home.title", "en"))
        sidebar.get_by_text(translate("app.image.upload", "en"), exact=True).click()
        sidebar.locator('input[type="file"]').set_input_files(str(PHOTO))
        sidebar.get_by_text(PHOTO.name).last.wait_for(timeout=60_000)
        wait_for_page(page, translate("home.title", "en"))
    # the picture in use, as the sidebar names it in each language (a sample by its title, a photo by its file)
    caption = {lang: PHOTO.name if with_upload_and_hub_model else translate("app.sample.fmnist_ankle_boot", lang)
               for lang in ("en", "zh")}
    model = {lang: translate(f"app.model.title.{ENTRY.id}", lang) for lang in ("en", "zh")}
    nav = sidebar.locator('[data-testid="stSidebarNav"]')
    # every page gets a switch then a click in the navigation; the two runs switch each page both ways
    langs = ["zh", "en"] if with_upload_and_hub_model else ["en", "zh"]
    if langs[0] == "en":
        switch_language(page, sidebar, "zh", "home.title")
    for i, ((url, area, _), (_, next_area, next_key)) in enumerate(zip(PAGES, PAGES[1:] + PAGES[:1])):
        lang = langs[i % 2]
        switch_language(page, sidebar, lang, f"{area}.title")
        nav.get_by_text(translate(next_key, lang), exact=True).click()  # where the stale label used to arrive
        wait_for_page(page, translate(f"{next_area}.title", lang))  # still in the language chosen
        assert_no_failure(page, f"{next_area} after switching to {lang} on {url}")
        assert sidebar.locator('[data-testid="stImageCaption"]').inner_text() == caption[lang], "the image is kept"
        if with_upload_and_hub_model:
            assert sidebar.get_by_text(model[lang]).count() >= 1, "the model is kept"
    page.screenshot(path=str(ARTIFACTS / f"language_switch_{int(with_upload_and_hub_model)}.png"))
    page.close()


def test_a_deep_link_opened_first_on_a_fresh_server_gets_the_whole_app(hub_cache, browser):
    """Streamlit starts a deep link of a fresh server in its old pages-folder mode, without app.py; the page
    must still come up with the sidebar, the navigation and the view its address names."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    env.pop("VIT_EXPLORER_MODEL", None)
    with streamlit_server(env) as url:  # nobody has opened "/" on this server
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.goto(f"{url}/step5_encoder?lang=zh&layer=3&head=2")
        wait_for_page(page, translate("step5.title", "zh"))
        assert_no_failure(page, "a deep link first")
        nav = page.locator('[data-testid="stSidebarNav"]')
        assert nav.get_by_text(translate("app.nav.step1", "zh"), exact=True).count() == 1  # app.py's navigation
        assert "layer=3" in page.url and "head=2" in page.url and "/step5_encoder" in page.url
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "deep_link_first_zh.png"), full_page=True)
        page.close()
