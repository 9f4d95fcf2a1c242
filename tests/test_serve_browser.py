"""The page of speakerid serve in headless Chromium: set the key, create a profile, enrol by
recording from the (fake) microphone, then verify by recording; the page must show "accept"
and the score bar. Chromium plays a packaged example clip as the microphone
(--use-file-for-fake-audio-capture). Skips when chromium, chromedriver or selenium is missing
(.ci/run installs them). Leaves a screenshot in /tmp/serve_screenshot.png."""

from __future__ import annotations

import shutil

import pytest
import soundfile as sf

from tests._serve_helpers import EXAMPLES, need_serve_deps
from speakerid.serve.launch import free_port, start_server, stop_server

need_serve_deps()
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install selenium")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
SCREENSHOT = "/tmp/serve_screenshot.png"


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="chromium / chromedriver missing: apt-get install -y chromium chromium-driver")
def test_record_enrol_and_verify_in_the_page(tmp_path):
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from speakerid.serve.keys import KeyStore

    wav = tmp_path / "mic.wav"
    data, sr = sf.read(str(EXAMPLES / "speaker_a_1.flac"), dtype="int16")
    sf.write(str(wav), data, sr, subtype="PCM_16")
    _, key = KeyStore(tmp_path / "srv").create("browser")
    port = free_port()
    proc = start_server(tmp_path / "srv", port, "--min-enroll-speech", "4", log=tmp_path / "server.log")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,1300",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        el = lambda i: driver.find_element(By.ID, i)  # noqa: E731
        el("apikey").send_keys(key)
        el("save-key").click()
        el("display-name").send_keys("alice")
        el("create-profile").click()
        WebDriverWait(driver, 20).until(lambda d: len(el("profile-id").get_attribute("value")) == 32)
        el("rec-seconds").clear()
        el("rec-seconds").send_keys("6")
        el("record-enroll").click()
        WebDriverWait(driver, 90).until(lambda d: el("enroll-status").text.startswith(("enrolled:", "error")))
        assert el("enroll-status").text.startswith("enrolled:"), (el("enroll-status").text, el("log").text)
        assert float(el("enroll-progress").get_attribute("value")) >= 4
        el("rec-seconds").clear()
        el("rec-seconds").send_keys("4")
        el("record-verify").click()
        WebDriverWait(driver, 90).until(lambda d: el("verify-result").text in ("accept", "reject", "error"))
        assert el("verify-result").text == "accept", (el("verify-score").text, el("log").text)
        assert "llr" in el("verify-score").text and "threshold" in el("verify-score").text
        assert el("score-threshold").is_displayed()
        width = driver.execute_script("return parseFloat(document.getElementById('score-fill').style.width)")
        assert width > 50  # an accepted LLR sits right of the middle of the bar
        driver.save_screenshot(SCREENSHOT)
    finally:
        driver.quit()
        stop_server(proc)
