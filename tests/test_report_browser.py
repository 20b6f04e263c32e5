"""The HTML report in headless Chromium: it renders without console errors, shows the matrix and a
heatmap, and a document containing ``<script>`` is shown as text, never executed.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` driver (dev extra).
"""

import shutil

import pytest

from irmechtest.report.html import write_html

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def browser():
    chrome, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chrome or not driver_path:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never goes to the network for one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


def test_report_renders_matrix_heatmap_and_escaped_documents(browser, report_verdicts, tmp_path):
    from selenium.webdriver.common.by import By

    report = write_html(tmp_path / "report.html", report_verdicts)
    browser.get(report.as_uri())
    assert browser.find_element(By.ID, "matrix").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#matrix td.cell")) == 4
    heatmap = browser.find_element(By.CSS_SELECTOR, "table.heatmap")
    assert heatmap.is_displayed() and heatmap.size["height"] > 20
    assert browser.find_element(By.CSS_SELECTOR, "svg.scatter").is_displayed()
    assert browser.execute_script("return window.irmechPwned") is None
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert "<script>window.irmechPwned = true;" in browser.find_element(By.TAG_NAME, "body").text
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []
