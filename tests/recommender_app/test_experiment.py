"""An A/B experiment through the real app, a real Kafka and Redis, two query-node shards:
requests and clicks sent through the app's API, each served list read back from `impressions`,
and `nrtrec report experiment` checked against what was sent; and the homepage in headless
Chromium, whose click names the list it was shown in."""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict

import pytest
from fastapi.testclient import TestClient
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from typer.testing import CliRunner

from nrtrec.cli import app as cli
from nrtrec.core.settings import ExperimentSettings, Settings
from nrtrec.recommender_app import create_app
from nrtrec.recommender_app.experiment import TopicReader, wilson, z_of
from nrtrec.schemas import ClickEvent, Impression
from tests.conftest import free_port
from tests.recommender_app.chromium import headless_chromium
from tests.recommender_app.cluster import PARTITIONS, put_user, start, store_settings, with_kafka
from tests.recommender_app.topics import make_topic, records_in
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ARMS = [{"name": "control"}, {"name": "v1", "model_version": 1}]


@pytest.fixture(scope="module")
def kafka(stack) -> str:
    return stack.kafka()


@pytest.fixture
def settings(redis_url, cluster, kafka) -> Settings:
    """One read path (the shards, as under `nrtrec up`): the arms do not depend on it, and
    test_app runs both. Topics of the test's own; generous timeouts (answers, not timing)."""
    settings = store_settings(
        redis_url,
        gateway_url=cluster.gateway.url,
        shards=cluster.shard_urls(),
        popular_refresh_s=0.2,
        versions_ttl_s=0.2,
        store_timeout_s=2.0,
        search_timeout_s=2.0,
        deadline_s=5.0,
    )
    settings = with_kafka(settings, kafka)
    settings.topics.clicks = make_topic(kafka, "clicks")
    settings.topics.impressions = make_topic(kafka, "impressions")
    return settings


def served_impressions(kafka: str, topic: str, n: int) -> list[Impression]:
    """The topic's records once it holds ``n`` (impressions are sent without waiting)."""
    wait_until(f"{n} impressions on {topic}", lambda: records_in(kafka, topic) >= n)
    return list(TopicReader(kafka, topic, Impression, timeout_s=30))


def run_report(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        "NRTREC_TOPICS__CLICKS": settings.topics.clicks,
        "NRTREC_TOPICS__IMPRESSIONS": settings.topics.impressions,
        "NRTREC_EXPERIMENT__NAME": settings.experiment.name,
        "NRTREC_EXPERIMENT__ARMS": json.dumps(ARMS),
    }
    bootstrap = settings.kafka.bootstrap_servers
    result = CliRunner().invoke(
        cli, ["report", "experiment", "--bootstrap", bootstrap, *args], env=env
    )
    return result.exit_code, result.output


def test_the_report_gives_per_arm_what_was_served_and_clicked(
    settings, store, catalogue, kafka
) -> None:
    # A fixed name: the same draw of arms on every run (the topics are the test's own).
    settings.experiment = ExperimentSettings(name="ab-1", arms=ARMS)
    users = [f"ab-u{i}" for i in range(24)]
    for i, user in enumerate(users):
        put_user(store, user, {1: catalogue.vectors[1][i], 2: catalogue.vectors[2][i]})
    store.add_views({str(i): 100 - i for i in range(1, 20)})

    answers: list[dict] = []  # every served list: its body, and "u", the user it was for
    clicks: list[dict] = []

    def click(user: str, item: str, request_id: str | None = None) -> None:
        clicks.append({"user_id": user, "item_id": item, "rid": request_id})

    with TestClient(create_app(settings, store=store)) as client:

        def recommend(user: str) -> dict:
            body = client.get(f"/v1/users/{user}/recommendations?k=5").json()
            answers.append(body | {"u": user})
            return body

        # Every answer is a served list, the polls' too (their lists may be empty).
        wait_until("the popular items loaded", lambda: recommend("nobody")["items"])
        for i, user in enumerate(users):
            for j in range(2):
                body = recommend(user)
                items, request_id = [item["id"] for item in body["items"]], body["request_id"]
                # A plan that every arm meets: some lists clicked once, some twice, some never,
                # a click naming a list on an item it did not hold, clicks from no list.
                if (i + j) % 3 == 0:
                    click(user, items[0], request_id)
                    if i % 4 == 0:
                        click(user, items[1], request_id)
                if j == 1 and i % 5 == 0:
                    click(user, "no-such", request_id)
            if i % 2 == 0:
                click(user, "250")
        # The homepage's module is a served list too, and says its request_id for its clicks.
        page = client.get(f"/?user={users[1]}").text
        [page_request] = re.findall(r'id="rec-list" data-request-id="([0-9a-f]{32})"', page)
        click(users[1], "x", page_request)
        for click in clicks:
            event = {"user_id": click["user_id"], "item_id": click["item_id"]}
            if click["rid"]:
                event["request_id"] = click["rid"]
            r = client.post("/v1/events", json=event)
            assert r.status_code == 202 and not r.json()["spooled"], r.text

    by_request = {a["request_id"]: a for a in answers}
    assert len(by_request) == len(answers), "a request_id was given twice"
    arm_of = {a["u"]: a["arm"] for a in answers}
    assert {arm_of[u] for u in users} == {"control", "v1"}, "both arms drawn among 24 users"
    assert arm_of["nobody"] in ("control", "v1")
    for a in answers:
        if a["u"] == "nobody" or a["arm"] == "control":
            assert (a["source"], a["model_version"]) == ("popular", None), a
        else:
            # The arm's version first, though the user's newest is v2.
            assert (a["source"], a["model_version"]) == ("older-version", 1), a
        assert a["degraded"] is False, a

    # Exactly one impression per served list, as served.
    impressions = served_impressions(kafka, settings.topics.impressions, len(answers) + 1)
    assert sorted(i.request_id for i in impressions) == sorted([*by_request, page_request])
    for impression in impressions:
        assert impression.experiment == settings.experiment.name
        if impression.request_id == page_request:
            assert (impression.user_id, impression.arm) == (users[1], arm_of[users[1]])
            continue
        a = by_request[impression.request_id]
        assert (impression.user_id, impression.arm, impression.source.value) == (
            a["u"],
            a["arm"],
            a["source"],
        )
        assert impression.items == [item["id"] for item in a["items"]]
        assert impression.model_version == a["model_version"]

    # What the report must say, from what was sent.
    expected: dict[str, dict] = defaultdict(
        lambda: {"impressions": 0, "clicks": 0, "user_clicks": 0, "users": set(), "clicked": set()}
    )
    for a in answers:
        expected[a["arm"]]["impressions"] += 1
        expected[a["arm"]]["users"].add(a["u"])
    expected[arm_of[users[1]]]["impressions"] += 1  # the page's list
    for click in clicks:
        arm = arm_of[click["user_id"]]
        expected[arm]["user_clicks"] += 1
        shown = by_request.get(click["rid"])
        if shown is not None and click["item_id"] in [item["id"] for item in shown["items"]]:
            expected[arm]["clicks"] += 1
            expected[arm]["clicked"].add(click["rid"])

    code, output = run_report(settings, "--json", "--timeout", "30")
    assert code == 0, output
    report = json.loads(output)
    assert report["experiment"] == settings.experiment.name
    assert [row["arm"] for row in report["arms"]] == ["control", "v1"]
    assert report["clicks_unmatched"] == 0 and report["unreadable"] == 0
    assert report["clicks_read"] == len(clicks)
    z = z_of(0.95)
    for row in report["arms"]:
        want = expected[row["arm"]]
        n, clicked = want["impressions"], len(want["clicked"])
        assert row["impressions"] == n and row["users"] == len(want["users"]), row
        assert (row["clicked"], row["clicks"]) == (clicked, want["clicks"]), row
        assert row["user_clicks"] == want["user_clicks"], row
        assert row["ctr"] == pytest.approx(clicked / n)
        assert (row["ctr_low"], row["ctr_high"]) == pytest.approx(wilson(clicked, n, z))
        assert row["recommended_share"] == pytest.approx(want["clicks"] / want["user_clicks"])
        assert 0 < clicked < n, "the plan clicks some lists of each arm, not all"

    # The table says the same; and a report of a topic that is not there fails, clearly.
    code, table = run_report(settings, "--timeout", "30")
    assert code == 0 and re.search(r"^control\s+control\s", table, re.M), table
    settings.topics.impressions = f"no-such-topic-{uuid.uuid4().hex[:6]}"
    code, output = run_report(settings, "--timeout", "5")
    assert code == 1 and "is not there" in output, output


def test_an_arm_whose_version_cannot_answer_falls_back_and_says_why(settings, store, catalogue):
    settings.experiment = ExperimentSettings(
        name="fallback", arms=[{"name": "v3", "model_version": 3}]
    )
    put_user(store, "fb-no-v3", {1: catalogue.vectors[1][5], 2: catalogue.vectors[2][5]})
    put_user(store, "fb-v3", {2: catalogue.vectors[2][6], 3: [1.0] * 8})
    with TestClient(create_app(settings, store=store)) as client:
        body = client.get("/v1/users/fb-no-v3/recommendations?k=4").json()
        # As without an experiment: the newest version with an index answers.
        assert (body["arm"], body["source"], body["model_version"]) == ("v3", "personalized", 2)
        assert body["degraded"] is True
        assert body["reasons"] == ["arm_fallback: arm 'v3' serves v3; the user has no v3 vector"]
        ids = [item["id"] for item in body["items"]]
        assert ids == catalogue.exact(2, catalogue.vectors[2][5], 4)
        body = client.get("/v1/users/fb-v3/recommendations?k=4").json()
        assert (body["source"], body["model_version"]) == ("older-version", 2)
        assert body["reasons"] == ["arm_fallback: arm 'v3' serves v3; v3 is not served"]


def test_without_an_experiment_answers_are_the_default_arm(settings, store, catalogue, kafka):
    put_user(store, "plain", {2: catalogue.vectors[2][7]})
    with TestClient(create_app(settings, store=store)) as client:
        body = client.get("/v1/users/plain/recommendations?k=3").json()
        assert (body["arm"], body["source"], body["degraded"]) == ("default", "personalized", False)
        assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"]), body
        # Similar items answer for an item, not a user: no arm drawn, no list logged.
        similar = client.get("/v1/items/12/similar?k=3").json()
        assert (similar["arm"], similar["request_id"]) == ("default", None)
    [impression] = served_impressions(kafka, settings.topics.impressions, 1)
    assert (impression.request_id, impression.experiment, impression.arm) == (
        body["request_id"],
        None,
        "default",
    )
    assert impression.items == [item["id"] for item in body["items"]]


def test_impressions_the_broker_did_not_take_are_spooled_and_sent_by_the_next_app(
    settings, store, catalogue, kafka
) -> None:
    """Without a broker the answers are served all the same (the log never waits); what was
    not delivered is in the spool at shutdown, up to its bound, and the next app with a broker
    sends it."""
    put_user(store, "spooled", {2: catalogue.vectors[2][3]})
    settings.app.kafka_bootstrap = f"127.0.0.1:{free_port()}"
    settings.app.impressions_spool_max = 3
    with TestClient(create_app(settings, store=store)) as client:
        served = []
        for _ in range(4):
            r = client.get("/v1/users/spooled/recommendations?k=3")
            assert r.status_code == 200 and r.json()["source"] == "personalized", r.text
            served.append(r.json()["request_id"])
    spool = settings.app.spool_path.with_name("impressions.jsonl")
    kept = [request_id for request_id in served if request_id in spool.read_text()]
    assert len(kept) == 3, "the spool keeps at most impressions_spool_max; the rest is dropped"
    settings.app.kafka_bootstrap = None
    with TestClient(create_app(settings, store=store)):
        impressions = served_impressions(kafka, settings.topics.impressions, 3)
        assert sorted(i.request_id for i in impressions) == sorted(kept)
        wait_until("the spool emptied", lambda: spool.read_text() == "")


def test_a_click_on_the_homepage_names_the_list_it_was_shown_in(
    settings, store, catalogue, cluster, kafka, tmp_path
) -> None:
    """``nrtrec app`` as a process, the page in headless Chromium: a click on a recommendation
    sends the page's request_id; a click in the similar items sends none."""
    put_user(store, "page-user", {2: catalogue.vectors[2][9]})
    env = {
        "NRTREC_REDIS__HOST": settings.redis.host,
        "NRTREC_REDIS__PORT": str(settings.redis.port),
        "NRTREC_USER_STORE__KEY_PREFIX": settings.user_store.key_prefix,
        "NRTREC_KAFKA__HOST": settings.kafka.host,
        "NRTREC_KAFKA__PORT": str(settings.kafka.port),
        "NRTREC_TOPICS__CLICKS": settings.topics.clicks,
        "NRTREC_TOPICS__IMPRESSIONS": settings.topics.impressions,
        "NRTREC_EXPERIMENT__NAME": "page",
        "NRTREC_EXPERIMENT__ARMS": json.dumps([{"name": "v2", "model_version": 2}]),
        "NRTREC_LOG_FORMAT": "text",
    }
    args = ["app", "--num-partitions", str(PARTITIONS)]
    for (url,) in cluster.shard_urls():
        args += ["--shard", url]

    def clicks_sent() -> int:
        return records_in(kafka, settings.topics.clicks)

    server = start("app", tmp_path, args, env)
    try:
        server.wait_healthy()
        browser = headless_chromium()
        try:
            browser.get(f"{server.url}/?user=page-user")
            page_request = browser.find_element(By.ID, "rec-list").get_attribute("data-request-id")
            card = browser.find_element(By.CSS_SELECTOR, "#rec-list li.item")
            recommended = card.get_attribute("data-item-id")
            card.find_element(By.CSS_SELECTOR, "button.open").click()
            wait_until("the click recorded", lambda: clicks_sent() == 1)
            card = browser.find_element(By.CSS_SELECTOR, "#rec-list li.item")
            card.find_element(By.CSS_SELECTOR, "button.similar").click()
            wait = WebDriverWait(browser, 30, poll_frequency=0.2)
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#similar-list li.item"))
            similar = browser.find_element(By.CSS_SELECTOR, "#similar-list li.item")
            similar_item = similar.get_attribute("data-item-id")
            similar.find_element(By.CSS_SELECTOR, "button.open").click()
            wait_until("both clicks recorded", lambda: clicks_sent() == 2)
        finally:
            browser.quit()
    finally:
        server.stop()
    first, second = TopicReader(kafka, settings.topics.clicks, ClickEvent, timeout_s=30)
    assert (first.item_id, first.request_id) == (recommended, page_request)
    assert (second.item_id, second.request_id) == (similar_item, None)
    impressions = {
        i.request_id: i for i in TopicReader(kafka, settings.topics.impressions, Impression)
    }
    shown = impressions[page_request]
    assert (shown.user_id, shown.experiment, shown.arm, shown.model_version) == (
        "page-user",
        "page",
        "v2",
        2,
    )
    assert recommended in shown.items
