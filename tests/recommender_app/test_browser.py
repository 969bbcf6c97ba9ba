"""The homepage module end to end in headless Chromium (Debian's chromium + chromedriver, driven
by Selenium): open the page for a user, click an item, see the recommendations change; "See
similar items" pivots. Screenshots go to tests/artifacts/recommender_app/ (gitignored).

Everything is real: the app runs as ``nrtrec app`` (a process), with the stack's Redis and Kafka
and a query-node cluster behind a gateway. The click goes through the app to Kafka. What turns a
click into a new user vector is, for now, ``StandInPipeline``: it consumes the app's clicks
topic and writes the user's new vector into the store, as the streaming job (issue 5: clicks ->
Flink user-embedding job -> store) will. To run against the real pipeline, replace the
``pipeline`` fixture with one that starts that job on the same topic and store; the test itself
only waits for the page to change.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from nrtrec.core.settings import Settings
from nrtrec.schemas import ClickEvent, decode
from nrtrec.user_store import UserVectorStore, open_store
from tests.recommender_app.cluster import (
    PARTITIONS,
    Catalogue,
    Server,
    put_user,
    start,
    store_settings,
)
from tests.recommender_app.test_events import make_topic

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "recommender_app"
USER = "browser-user"
K = 10


class StandInPipeline:
    """Consumes the clicks topic; for each click, the user's new vector is the clicked item's
    (version 2) and the item goes first in the user's recent views. A stand-in for the
    streaming job's user tower, on the same path: Kafka in, store out."""

    def __init__(self, bootstrap: str, topic: str, store: UserVectorStore, catalogue: Catalogue):
        self.clicks: list[ClickEvent] = []
        self._store = store
        self._catalogue = catalogue
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"stand-in-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
            }
        )
        self._consumer.subscribe([topic])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            event = decode(ClickEvent, message.value())
            assert message.key() == event.user_id.encode()
            record = self._store.get(event.user_id)
            recent = [event.item_id, *(record.recent_items if record else [])]
            row = self._catalogue.ids.index(event.item_id)
            put_user(self._store, event.user_id, {2: self._catalogue.vectors[2][row]}, recent)
            self.clicks.append(event)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@pytest.fixture(scope="module")
def kafka(stack) -> str:
    return stack.kafka()


@pytest.fixture(scope="module")
def topic(kafka) -> str:
    return make_topic(kafka)


@pytest.fixture(scope="module")
def app_settings(redis_url, cluster, kafka, topic) -> Settings:
    return store_settings(redis_url, gateway_url=cluster.gateway.url, kafka_bootstrap=kafka)


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, app_settings, cluster, topic) -> Iterator[Server]:
    """``nrtrec app``, configured the way ``nrtrec up`` configures it: settings from NRTREC_*."""
    s = app_settings
    env = {
        "NRTREC_REDIS__HOST": s.redis.host,
        "NRTREC_REDIS__PORT": str(s.redis.port),
        "NRTREC_USER_STORE__KEY_PREFIX": s.user_store.key_prefix,
        "NRTREC_TOPICS__CLICKS": topic,
        "NRTREC_LOG_FORMAT": "text",
    }
    args = ["app", "--gateway-url", s.gateway.url, "--kafka", s.app.kafka_bootstrap]
    # Reads from the shards themselves, as under `nrtrec up`.
    args += ["--num-partitions", str(PARTITIONS)]
    for (url,) in cluster.shard_urls():
        args += ["--shard", url]
    server = start("app", tmp_path_factory.mktemp("app"), args, env)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def app_store(app_settings) -> Iterator[UserVectorStore]:
    with open_store(app_settings) as s:
        yield s


@pytest.fixture(scope="module")
def pipeline(kafka, topic, app_store, catalogue) -> Iterator[StandInPipeline]:
    p = StandInPipeline(kafka, topic, app_store, catalogue)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "needs Debian's chromium and chromium-driver (deploy/setup.sh)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    b = webdriver.Chrome(options=options, service=Service(driver))
    b.set_page_load_timeout(30)
    try:
        yield b
    finally:
        b.quit()


def shot(browser: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def item_ids(browser: webdriver.Chrome, list_id: str) -> list[str]:
    # One read in the page: the list may be re-rendered between two WebDriver calls.
    script = "return [...document.querySelectorAll(arguments[0])].map((li) => li.dataset.itemId)"
    return browser.execute_script(script, f"#{list_id} li.item")


def test_a_click_changes_the_recommendations_and_similar_items_pivot(
    browser, app_server, app_store, pipeline, catalogue
):
    start_vector = catalogue.vectors[2][0]
    recent = ["1", "2"]
    put_user(app_store, USER, {2: start_vector}, recent=recent)
    browser.get(f"{app_server.url}/?user={USER}")
    assert "Based on your recent views" in browser.page_source
    before = item_ids(browser, "rec-list")
    assert before == catalogue.exact(2, start_vector, K, keep=lambda i: i not in recent)
    assert item_ids(browser, "recent-list") == recent
    assert browser.find_element(By.ID, "recs-source").text == "personalized"
    shot(browser, "01-page.png")

    # Click the last recommendation: the page records it (POST /v1/events).
    clicked = before[-1]
    card = browser.find_element(By.CSS_SELECTOR, f'#rec-list li[data-item-id="{clicked}"]')
    title = card.find_element(By.CSS_SELECTOR, "button.open").text
    assert title == f"Film {clicked}"
    card.find_element(By.CSS_SELECTOR, "button.open").click()

    # The click reached Kafka, keyed by the user ...
    wait = WebDriverWait(browser, 15, poll_frequency=0.1)
    wait.until(lambda _: any(e.item_id == clicked for e in pipeline.clicks))
    event = next(e for e in pipeline.clicks if e.item_id == clicked)
    assert event.user_id == USER and event.action == "click"
    # ... and within seconds the page shows recommendations from the new vector.
    wait.until(lambda b: item_ids(b, "rec-list") != before)
    clicked_vector = catalogue.vectors[2][catalogue.ids.index(clicked)]
    viewed = {clicked, *recent}
    expected = catalogue.exact(2, clicked_vector, K, keep=lambda i: i not in viewed)
    wait.until(lambda b: item_ids(b, "rec-list") == expected)
    wait.until(lambda b: item_ids(b, "recent-list") == [clicked, *recent])
    assert "updated" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.CSS_SELECTOR, "#rec-list li.fresh")
    shot(browser, "02-after-click.png")

    # "See similar items" on a recommendation: its neighbours, without itself.
    pivot = expected[0]
    card = browser.find_element(By.CSS_SELECTOR, f'#rec-list li[data-item-id="{pivot}"]')
    card.find_element(By.CSS_SELECTOR, "button.similar").click()
    wait.until(lambda b: b.find_element(By.ID, "similar").is_displayed())
    pivot_vector = catalogue.vectors[2][catalogue.ids.index(pivot)]
    similar = catalogue.exact(2, pivot_vector, K + 1)[1:]
    wait.until(lambda b: item_ids(b, "similar-list") == similar)
    heading = browser.find_element(By.ID, "similar-heading").text
    assert heading == f"Similar to “Film {pivot}”"
    # And a pivot from there (visual discovery: similar of similar).
    nxt = similar[0]
    card = browser.find_element(By.CSS_SELECTOR, f'#similar-list li[data-item-id="{nxt}"]')
    card.find_element(By.CSS_SELECTOR, "button.similar").click()
    nxt_vector = catalogue.vectors[2][catalogue.ids.index(nxt)]
    wait.until(lambda b: item_ids(b, "similar-list") == catalogue.exact(2, nxt_vector, K + 1)[1:])
    shot(browser, "03-similar.png")
