"""The console page in headless Chromium (Debian's chromium + chromium-driver, via selenium).

Skipped, saying why, when the browser, its driver or selenium is missing.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import E2E_KEYS

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not DRIVER:
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def test_pasted_complaint_shows_heads_due_time_and_evidence(browser, serve_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # keys are on: the page is fetched with Basic credentials (password = API key); the
    # page's own API calls reuse them
    browser.get(f"http://agent:{E2E_KEYS['score']}@127.0.0.1:{serve_server.port}/")
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: d.find_element(By.ID, "version").text.startswith("model serve-tiny"))
    text = "小区3号楼闻到很浓的煤气味，有人头晕受伤了，物业电话一直打不通！"
    box = browser.find_element(By.ID, "text")
    box.send_keys(text)
    browser.execute_script("document.getElementById('received').value = '2026-03-02T10:00';")  # a Monday
    browser.find_element(By.ID, "score").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results .head")))
    heads = {el.get_attribute("data-head"): el for el in browser.find_elements(By.CSS_SELECTOR, "#results .head")}
    assert set(heads) == {"category", "department", "urgency", "sentiment"}
    expected = serve_server.request("POST", "/v1/score", {"text": text, "received_at": "2026-03-02T10:00"},
                                    {"X-API-Key": E2E_KEYS["score"]}).json()
    for head, el in heads.items():
        label = el.find_element(By.CSS_SELECTOR, ".label").text
        assert label.startswith(expected[head]["label"]), (head, label)
        assert "%" in el.find_element(By.CSS_SELECTOR, ".confidence").text
    assert "煤气" not in heads["category"].text  # labels, not the text
    assert heads["category"].find_element(By.CSS_SELECTOR, ".zh").text  # Chinese display name
    due = browser.find_element(By.ID, "due").text
    assert expected["due_at"].startswith("2026-03-02T")
    assert f"{expected['due_at'][:10]} {expected['due_at'][11:16]} UTC+08:00" in due
    marks = [m.text for m in browser.find_elements(By.CSS_SELECTOR, "#highlighted mark")]
    assert any("煤气" in m for m in marks) and any("受伤" in m for m in marks)
    assert browser.find_element(By.ID, "highlighted").text == text
    flags = browser.find_element(By.ID, "flags").text
    assert "injury" in flags
    browser.save_screenshot(str(tmp_path / "console.png"))


def test_console_shows_errors(browser, serve_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://agent:{E2E_KEYS['score']}@127.0.0.1:{serve_server.port}/")
    browser.find_element(By.ID, "text").send_keys("   ")
    browser.find_element(By.ID, "score").click()
    error = WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "error")))
    assert "empty_text" in error.text and "422" in error.text
