"""The demo page end to end in a real headless browser (Debian's chromium + chromium-driver, Selenium).

The server runs in a thread on a free port of 127.0.0.1; the test uploads a bundled test tile,
runs it and waits for the result image. ``CRESSHIFT_SCREENSHOT=docs/figures/demo.png`` saves a
screenshot of the finished page there (made with a bundled held-out photograph picked from the
page's list instead of the uploaded tile, and heun at NFE 5, so that the picture shows something).
"""
import os
import shutil
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("no chromium/chromedriver on this machine (apt-get install chromium chromium-driver; .ci/run does)",
                allow_module_level=True)
pytest.importorskip("selenium", reason="selenium is part of the test extra")
pytest.importorskip("uvicorn", reason='the demo needs its extra: pip install -e ".[demo]"')
pytest.importorskip("python_multipart", reason='the demo needs its extra: pip install -e ".[demo]"')

import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from cresshift.data.io import load_image  # noqa: E402
from cresshift.demo.app import create_app  # noqa: E402
from cresshift.demo.samples import find_photo  # noqa: E402
from cresshift.demo.service import ModelChoice  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
RUN_SECONDS = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    app = create_app([ModelChoice("bundled", "bundled"), ModelChoice("bundled-discrete", "bundled-discrete")])
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert thread.is_alive() and time.time() < deadline, "the demo server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def test_page_uploads_runs_and_shows_the_result(server, browser):
    from cresshift.bench import bundled_testset

    shot = os.environ.get("CRESSHIFT_SCREENSHOT")
    browser.get(server + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "status").text.startswith("Ready"))
    if shot:  # a held-out photograph from the page's list, for the picture (its PSNR-Y shows too)
        solver, nfe, side = "heun", "5", find_photo("chelsea").hr().shape[-1] // 4
        Select(browser.find_element(By.ID, "photo")).select_by_value("chelsea")
    else:  # a bundled test tile, uploaded as a user would
        upload, solver, nfe = sorted(bundled_testset().glob("*.png"))[0], "ddim", "2"
        side = load_image(upload).shape[-1]
        browser.find_element(By.ID, "image-file").send_keys(str(Path(upload).resolve()))
    Select(browser.find_element(By.ID, "solver")).select_by_value(solver)
    nfe_box = browser.find_element(By.ID, "nfe")
    nfe_box.clear()
    nfe_box.send_keys(nfe)
    browser.find_element(By.ID, "run").click()
    result = browser.find_element(By.ID, "result")
    WebDriverWait(browser, RUN_SECONDS).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", result)
        or "error" in d.find_element(By.ID, "status").get_attribute("class"))
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("Done"), status
    assert browser.execute_script("return arguments[0].naturalWidth", result) == 4 * side
    assert browser.find_element(By.ID, "info-nfe").text.startswith(nfe)
    assert browser.find_element(By.ID, "download").get_attribute("href").endswith("/sr.png")
    # linked zoom: a wheel event on one view scales all three alike
    transforms = browser.execute_script(
        "const v = document.querySelector('.view'), r = v.getBoundingClientRect();"
        "v.dispatchEvent(new WheelEvent('wheel', {deltaY: -400, clientX: r.left + 20, clientY: r.top + 20,"
        " bubbles: true, cancelable: true}));"
        "return [...document.querySelectorAll('.stage')].map((s) => s.style.transform);")
    assert len(transforms) == 3 and len(set(transforms)) == 1 and "scale(1)" not in transforms[0], transforms
    browser.execute_script("document.querySelector('.view').dispatchEvent(new MouseEvent('dblclick', {bubbles: true}))")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(shot))
