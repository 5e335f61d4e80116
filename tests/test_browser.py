"""The app in a real browser: `streamlit run app.py` on a free port, headless Chromium via selenium.

Every page must render without an exception or error box; a screenshot of each goes to
$TPV_SCREENSHOTS (default: a folder in the system temp dir; run with TPV_SCREENSHOTS=docs/screenshots
to refresh the committed ones). Uses data/zoo when it holds prompts,
else a store of tiny MiniLM prompts (TPV_BROWSER_STORE / TPV_BROWSER_RESULTS choose others, e.g. for
the screenshots). Also times a Combine slider move to the first estimate.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("TPV_SCREENSHOTS") or Path(tempfile.gettempdir()) / "tpv-screenshots")
# /train first: on a fresh server the first visit decides whether Streamlit stays in its old pages/-folder
# mode (see pages/_ui.py, _leave_v1_pages_mode); the navigation must show our titles either way
PAGES = [("train", "train"), ("library", ""), ("similarity", "similarity"), ("projection", "projection"),
         ("combine", "combine"), ("fewshot", "fewshot")]
CHROME_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1440,1500",
               "--hide-scrollbars"]

pytestmark = pytest.mark.browser


def _chromium() -> tuple[str | None, str | None]:
    browser = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
    return browser, shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zoo_has_prompts() -> bool:
    zoo = ROOT / "data" / "zoo"
    return any(zoo.glob("minilm-l6/*/*.safetensors"))


@pytest.fixture(scope="module")
def browser_store(tmp_path_factory, request):
    """TPV_BROWSER_STORE when set (e.g. a richer store for the screenshots), else data/zoo when it holds
    MiniLM prompts, else a copy of the session's tiny MiniLM store."""
    if os.environ.get("TPV_BROWSER_STORE"):
        return Path(os.environ["TPV_BROWSER_STORE"])
    if _zoo_has_prompts():
        return ROOT / "data" / "zoo"
    tiny = request.getfixturevalue("tiny_store")
    root = tmp_path_factory.mktemp("browser_store") / "store"
    shutil.copytree(tiny.root, root)
    return root


@pytest.fixture(scope="module")
def server(browser_store, tmp_path_factory):
    browser, driver = _chromium()
    if not browser or not driver:
        pytest.skip("headless browser test needs Debian's `chromium` and `chromium-driver` "
                    "(apt-get install -y chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium 4 is needed for the browser test (pip install selenium)")
    port = _free_port()
    results = os.environ.get("TPV_BROWSER_RESULTS") or tmp_path_factory.mktemp("results")  # few-shot CSVs
    env = {**os.environ, "TPV_STORE": str(browser_store), "TPV_RESULTS": str(results), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "TPV_COMBINE_ROWS": os.environ.get("TPV_COMBINE_ROWS", "100")}  # Combine: 100 rows per task, not all
    env.pop("TPV_NO_WARMUP", None)
    log = open(tmp_path_factory.mktemp("log") / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read().strip() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log.name}")
        else:
            raise RuntimeError(f"streamlit did not answer on {url} within 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def driver(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in CHROME_ARGS:
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(chromedriver))
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def script_state(d) -> str:
    """Streamlit's own flag on the app root: ``running`` while a script (or fragment) run is under way."""
    return d.execute_script(
        "const a = document.querySelector('[data-testid=stApp]');"
        "return a ? a.getAttribute('data-test-script-state') : ''") or ""


def wait_rendered(d, timeout: float = 180, settle: float = 1.5) -> None:
    """Wait until the page has its title and no script has been running for ``settle`` seconds."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        titled = d.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] h1')
        spinners = d.find_elements(By.CSS_SELECTOR, '[data-testid="stSpinner"]')
        if titled and not spinners and script_state(d) == "notRunning":
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                return
        else:
            quiet_since = None
        time.sleep(0.1)
    raise AssertionError(f"page did not finish rendering within {timeout} s (script state {script_state(d)!r})")


def page_text(d) -> str:
    from selenium.webdriver.common.by import By

    return d.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text


def page_problems(d) -> list[str]:
    from selenium.webdriver.common.by import By

    found = d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    found += d.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
    return [e.text[:500] for e in found]


@pytest.mark.parametrize("name,path", PAGES, ids=[p[0] for p in PAGES])
def test_page_renders_in_chromium(driver, server, name, path):
    from selenium.webdriver.common.by import By

    driver.get(f"{server}/{path}")
    wait_rendered(driver, settle=0.6 if name == "projection" else 1.5)  # Projection polls UMAP every second
    if name == "projection":  # PCA at once; UMAP replaces it when the background warm-up is done
        deadline = time.monotonic() + 300  # the first UMAP fit compiles numba code (~1 min here)
        while time.monotonic() < deadline and "UMAP is warming up" in page_text(driver):
            time.sleep(1)
        wait_rendered(driver)
        assert "UMAP is warming up" not in page_text(driver), "UMAP never became ready"
    problems = page_problems(driver)
    nav = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebarNav"]').text
    assert "Few-shot" in nav and "Library" in nav and "ui" not in nav.split(), nav
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    assert not problems, problems


def test_combine_slider_to_first_estimate(driver, server):
    """Move a weight slider with the keyboard and time, in the browser, until the first running estimate
    of the new combination is on screen (the server's own measure is printed too)."""
    import re

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{server}/combine")
    wait_rendered(driver)
    pattern = re.compile(r"first estimate after ([0-9.]+) s")

    rows_pattern = re.compile(r"estimating… ([0-9]+)/")

    def estimate_state() -> tuple[str | None, int | None]:
        """(first-estimate stamp, rows scored so far while estimating; None once done)"""
        text = driver.execute_script(
            "return Array.from(document.querySelectorAll('[data-testid=stCaptionContainer]'))"
            ".map(e => e.innerText).join(' ')") or ""
        m, r = pattern.search(text), rows_pattern.search(text)
        return (m.group(1) if m else None), (int(r.group(1)) if r else None)

    def new_estimate(before: tuple[str | None, int | None], now: tuple[str | None, int | None]) -> bool:
        """A new combination's estimate is on screen: its stamp differs, or the row count started again
        (two moves can take the same time to their first estimate, so the stamp alone may repeat)."""
        (stamp0, rows0), (stamp, rows) = before, now
        if stamp is None:
            return False
        if stamp != stamp0:
            return True
        return rows is not None and (rows0 is None or rows < rows0)

    timings = []
    for move in range(3):
        sliders = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"]')
        assert sliders, "no weight slider on the Combine page"
        before = estimate_state()
        driver.execute_script("arguments[0].focus()", sliders[move % len(sliders)])
        t0 = time.perf_counter()
        ActionChains(driver).send_keys(Keys.ARROW_LEFT).perform()
        now = (None, None)
        while time.perf_counter() - t0 < 60:
            now = estimate_state()
            if new_estimate(before, now):
                break
            time.sleep(0.01)
        assert new_estimate(before, now), f"no running estimate after the slider move ({before} -> {now})"
        timings.append({"browser_s": round(time.perf_counter() - t0, 3), "server_s": float(now[0])})
        time.sleep(1.0)  # the next move interrupts the refinement, as a user's would
    wait_rendered(driver)  # the last combination refines to the full validation split
    assert not page_problems(driver)
    assert "done:" in page_text(driver) or "full validation split" in page_text(driver)
    print(json.dumps({"combine_slider_to_first_estimate": timings}))


def _set_text(driver, xpath: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.XPATH, xpath)
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    box.send_keys(text, Keys.ENTER)
    time.sleep(0.5)
    wait_rendered(driver, settle=0.8)


def test_training_job_in_the_browser(driver, server, tmp_path):
    """Start a small training job from the Train page into a temporary store, watch the fragment refresh
    its progress bar, and find the prompt in the store when it is done."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from tpv_core.store import PromptStore

    driver.get(f"{server}/train")
    wait_rendered(driver)
    _set_text(driver, '//section[@data-testid="stSidebar"]//input[@type="text"]', str(tmp_path))
    tasks = driver.find_element(By.XPATH, '//div[@data-testid="stMultiSelect"][.//p[text()="Tasks"]]//input')
    tasks.click()
    tasks.send_keys("sentences_yelp", Keys.ENTER)
    tasks.send_keys(Keys.ESCAPE)
    wait_rendered(driver, settle=0.8)
    number = '//div[@data-testid="stNumberInput"][.//p[text()="{}"]]//input'
    _set_text(driver, number.format("Prompt length L"), "8")
    _set_text(driver, number.format("Steps"), "20")
    _set_text(driver, number.format("Validation rows"), "16")
    driver.find_element(By.XPATH, '//button[.//p[text()="Start training"]]').click()
    deadline = time.monotonic() + 600
    shot = False
    live_points = 0
    while time.monotonic() < deadline:
        text = page_text(driver)
        if "step " in text and " left" in text:  # the fragment refreshes the running job
            live_points = max(live_points, chart_points(driver))
            if live_points >= 2 and not shot:  # the live loss curve has at least two steps
                time.sleep(1.5)
                SHOTS.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(SHOTS / "train_job.png"))
                shot = True
        if "done after" in text:
            break
        time.sleep(0.3)
    assert "done after" in page_text(driver), page_text(driver)[-800:]
    assert shot and live_points >= 2, f"never saw the running job's live curve (points: {live_points})"
    assert PromptStore(tmp_path).exists("minilm-l6", "sentences_yelp", "vocab5000-s0-L8")
    assert not page_problems(driver)


def chart_points(driver) -> int:
    """Points of the first trace of the training-curve charts on the page (0 when there is none)."""
    return int(driver.execute_script(
        "let n = 0; for (const g of document.querySelectorAll('.js-plotly-plot')) {"
        "  const d = g.data || []; if (d.length && d[0].name === 'training loss') n = Math.max(n, (d[0].x || []).length);"
        "} return n;") or 0)


def _nav(driver, title: str) -> None:
    from selenium.webdriver.common.by import By

    link = driver.find_element(By.XPATH, f'//*[@data-testid="stSidebarNav"]//a[contains(normalize-space(.), "{title}")]')
    link.click()
    time.sleep(0.5)
    wait_rendered(driver, settle=0.8)


def _sidebar_store(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, '//section[@data-testid="stSidebar"]//input[@type="text"]').get_attribute("value")


def test_store_root_survives_real_page_switches(driver, server, tmp_path):
    """The sidebar's store root, set once, stays through clicks on every page of the navigation (and in the
    URL); every page's header names it."""
    driver.get(f"{server}/")
    wait_rendered(driver)
    _set_text(driver, '//section[@data-testid="stSidebar"]//input[@type="text"]', str(tmp_path))
    for title in ["Train", "Similarity", "Projection", "Combine", "Few-shot", "Library", "Train"]:
        _nav(driver, title)
        assert _sidebar_store(driver) == str(tmp_path), title
        assert f"Store: {tmp_path}" in page_text(driver), title
        assert "store=" in driver.current_url, driver.current_url
    driver.get(driver.current_url)  # a reload keeps it (from the URL)
    wait_rendered(driver)
    assert _sidebar_store(driver) == str(tmp_path)
    driver.get(f"{server}/?store=")  # back to the default store for the other tests (new session)
    wait_rendered(driver)


def test_combine_formula_is_literal(driver, server):
    """Weights 0.55 and -0.2 show as written: no Markdown italics, no '+ -'."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{server}/combine")
    wait_rendered(driver)
    sliders = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"]')
    assert len(sliders) >= 2
    for slider, presses in ((sliders[0], 9), (sliders[1], 24)):  # 1.0 -> 0.55 and 1.0 -> -0.2 in steps of 0.05
        driver.execute_script("arguments[0].focus()", slider)
        ActionChains(driver).send_keys(*([Keys.ARROW_LEFT] * presses)).perform()
        time.sleep(0.5)
        wait_rendered(driver)
    code = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stCode"]'))
    assert "+ 0.55·" in code and "− 0.2·" in code and "+ −" not in code and "[s0]" in code, code
    assert not driver.find_elements(By.XPATH, '//*[@data-testid="stMain"]//em[contains(., "sst2") or contains(., "*")]')
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / "combine_weights.png"))
