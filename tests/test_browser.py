"""The page at / in headless Chromium: type a text, click, see a bar per class."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, make_rows, write_csv

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed"
)


@contextlib.contextmanager
def page(run: str, tmp_path: Path):
    """`textfit serve RUN` on a free port and a headless Chromium on its page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "textfit", "serve", run, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--window-size=900,700",
    ):
        opts.add_argument(flag)
    driver = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "server did not start"
                time.sleep(0.25)
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 20).until(lambda d: "labels:" in d.find_element(By.ID, "meta").text)
        yield driver
    finally:
        if driver:
            driver.quit()
        server.terminate()
        server.wait(30)


def tiny_run(tiny_model: str, tmp_path: Path, rows: list, epochs: int, learning_rate: float) -> str:
    from textfit import TrainConfig, train

    data = write_csv(tmp_path / "rows.csv", rows)
    cfg = TrainConfig(
        data=str(data),
        model=tiny_model,
        output=str(tmp_path / "run"),
        method="finetune",  # the loop's settings below; 120 rows would run the contrastive method
        epochs=epochs,
        batch_size=8,
        learning_rate=learning_rate,
        precision="fp32",
        freeze_word_embeddings=False,
    )
    return train(cfg)["folder"]


def classify(driver, text: str, rows: int) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "text").send_keys(text)
    driver.find_element(By.ID, "go").click()
    WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#result .row")) == rows)
    return driver.find_elements(By.CSS_SELECTOR, "#result .row")


def test_page_classifies_a_text_in_a_real_browser(tiny_model, tmp_path):
    from selenium.webdriver.common.by import By

    from textfit import Classifier

    run = tiny_run(tiny_model, tmp_path, make_rows(120), epochs=5, learning_rate=1e-2)
    with page(run, tmp_path) as driver:
        rows = classify(driver, "the film was good and lovely", 2)
        shown = [r.find_element(By.CLASS_NAME, "label").text for r in rows]
        want = Classifier.load(run).predict(["the film was good and lovely"])[0]
        assert shown[0] == want.label and sorted(shown) == ["negative", "positive"]
        assert rows[0].find_element(By.CLASS_NAME, "pct").text == f"{100 * want.score:.1f}%"
        driver.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 5000


def test_page_marks_every_label_over_its_threshold(tmp_path):
    from selenium.webdriver.common.by import By

    from test_tasks import multi_label_rows
    from textfit import Classifier, TrainConfig, train

    data = tmp_path / "topics.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in multi_label_rows(160)), encoding="utf-8")
    cfg = TrainConfig(data=str(data), output=str(tmp_path / "run"), epochs=4, batch_size=8, method="finetune")
    run = train(cfg)["folder"]  # the fine-tuning loop, as test_tasks.py's ml_run (contrastive: test_fewshot.py)
    text = "the dinner was fine and the waiter very good"
    with page(run, tmp_path) as driver:
        rows = classify(driver, text, 3)
        marked = {
            r.find_element(By.CLASS_NAME, "label").text for r in rows if "best" in r.get_attribute("class").split()
        }
        assert marked == set(Classifier.load(run).predict([text])[0].labels) == {"food", "staff"}
        assert "multi-label · labels: food, room, staff" in driver.find_element(By.ID, "meta").text
        driver.save_screenshot(str(tmp_path / "multi.png"))
        assert (tmp_path / "multi.png").stat().st_size > 5000


def test_page_explains_a_prediction(tiny_model, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_trust import CUE, planted_rows

    run = tiny_run(tiny_model, tmp_path, planted_rows(300, seed=7), epochs=6, learning_rate=3e-3)
    with page(run, tmp_path) as driver:
        assert driver.find_element(By.ID, "explainbox").is_displayed()
        driver.find_element(By.ID, "explain").click()
        classify(driver, f"the staff were {CUE} and the food", 2)
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#explanation .w"))
        words = driver.find_elements(By.CSS_SELECTOR, "#explanation .w")
        assert [w.text for w in words] == f"the staff were {CUE} and the food".split()
        top = max(words, key=lambda w: float(w.get_attribute("data-attribution")))
        assert top.text == CUE and "31, 157, 85" in top.get_attribute("style")  # green, full strength
        assert 'Why "positive"' in driver.find_element(By.CSS_SELECTOR, "#explanation .note").text
        driver.save_screenshot(str(tmp_path / "explain.png"))
