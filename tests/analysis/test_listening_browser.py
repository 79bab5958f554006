"""The listening page in a real headless Chromium: a scripted rater opens it, plays a clip, answers every item with
the keyboard, reloads midway (the answers stay), and exports; `score` then gives the numbers worked out by hand for
that rater's answers. Skipped, saying why, only where Chromium or its driver is not installed."""

import json

import pytest
from browser import missing_reason, requested_urls, start_chromium, stop_chromium, wait_for_json
from test_listening_study import CAT, CLIPS, DOG, make_study, study

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=f"browser test: {missing_reason()}")

# The scripted rater's answers, by (class, clip): (present, confidence).
ANSWERS = {
    (DOG, CLIPS[0]): (True, 5), (DOG, CLIPS[1]): (False, 4), (DOG, CLIPS[2]): (True, 3),
    (CAT, CLIPS[3]): (True, 2), (CAT, CLIPS[4]): (False, 1), (CAT, CLIPS[5]): (False, 5),
}  # fmt: skip


@pytest.fixture(scope="module")
def browser_study(tmp_path_factory, shared_audioset):
    root = tmp_path_factory.mktemp("browser")
    return make_study(root), root / "downloads"


@pytest.fixture(scope="module")
def chromium(browser_study):
    _, downloads = browser_study
    downloads.mkdir()
    session = start_chromium(downloads)
    yield session
    stop_chromium(session)


def keys(driver, *sequence: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in sequence:
        ActionChains(driver).send_keys(key).perform()


def text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def answer_current(driver, by_item: dict) -> str:
    """Answer the item on screen with the keyboard (Y/N, then 1-5) and return its id, once its clip has loaded (a
    rater hears it first; answering sooner races the clip's request against the next item's)."""
    from selenium.webdriver.support.ui import WebDriverWait

    item = driver.execute_script("return document.getElementById('item').dataset.itemId")
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return document.getElementById('player').readyState") >= 1
    )
    present, confidence = by_item[item]
    keys(driver, "y" if present else "n", str(confidence))
    return item


def test_a_scripted_rater_answers_reloads_exports_and_score_matches_the_hand_computation(browser_study, chromium):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    folder, downloads = browser_study
    manifest = json.loads((folder / "manifest.json").read_text())
    by_item = {item["item_id"]: ANSWERS[(item["mid"], item["clip_id"])] for item in manifest["items"]}
    driver = chromium
    driver.get((folder / "page" / "index.html").as_uri())
    assert driver.find_element("id", "start").is_displayed()
    driver.find_element("id", "rater-input").send_keys("alice", Keys.ENTER)
    assert text(driver, "rater-chip") == "Rater: alice" and text(driver, "answered") == "0 of 6 answered"

    # Space plays the clip: the audio element really advances and records a played range.
    keys(driver, " ")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "const p = document.getElementById('player'); return p.currentTime > 0 && p.played.length > 0"))  # fmt: skip
    assert driver.execute_script("return document.getElementById('player').error") is None

    seen = []
    for _ in range(3):
        seen.append(answer_current(driver, by_item))
        keys(driver, Keys.ENTER)
    assert text(driver, "answered") == "3 of 6 answered"

    driver.refresh()  # midway: the rater, the position and the answers come back from localStorage
    assert text(driver, "rater-chip") == "Rater: alice" and text(driver, "answered") == "3 of 6 answered"
    assert text(driver, "position") == "Item 4 / 6"
    keys(driver, Keys.ARROW_LEFT)
    present, confidence = by_item[seen[-1]]
    assert driver.execute_script("return document.getElementById('item').dataset.itemId") == seen[-1]
    pressed = "yes" if present else "no"
    assert driver.find_element("id", pressed).get_attribute("aria-pressed") == "true"
    chosen = driver.find_elements("css selector", "#confidence button[aria-pressed='true']")
    assert [button.get_attribute("data-value") for button in chosen] == [str(confidence)]
    keys(driver, Keys.ARROW_RIGHT)

    for _ in range(3):
        seen.append(answer_current(driver, by_item))
        keys(driver, Keys.ENTER)
    assert text(driver, "answered") == "6 of 6 answered"
    assert driver.find_element("id", "done").is_displayed()
    assert sorted(seen) == sorted(by_item)

    keys(driver, "e")
    exported = wait_for_json(downloads / "answers-alice.json")
    assert exported["study_id"] == manifest["study_id"] and exported["rater_id"] == "alice"
    assert exported["complete"] is True and exported["order"] == seen
    assert {k: (v["present"], v["confidence"]) for k, v in exported["answers"].items()} == by_item
    assert exported["answers"][seen[0]]["plays"] >= 1  # the clip played on the first item was counted

    # Everything the page requested is the page itself or one of its clips: no score, label or manifest file.
    # (chrome:// pages are the browser's own start page; blob: is the export itself.)
    requested = {url for url in requested_urls(driver) if url.split(":")[0] in ("file", "http", "https")}
    clips = {(folder / "page" / item["file"]).as_uri() for item in manifest["items"]}
    page = (folder / "page" / "index.html").as_uri()
    assert requested - {page} <= clips, requested
    assert len(requested & clips) >= 6  # each item's clip was loaded as the rater went

    result = study.main(["score", str(folder), str(downloads / "answers-alice.json")])
    # Dog, human (yes, no, yes) on clips 0-2: A (.9, .8, .7) -> (1 + 2/3) / 2 = 5/6; B (.6, .95, .85) ranks
    #   no, yes, yes -> (1/2 + 2/3) / 2 = 7/12; dataset (1, 1, 0) -> 1/2 * 1/2 + 1/2 * 2/3 = 7/12.
    # Cat, human (yes, no, no) on clips 3-5: A (.4, .5, .6) puts the yes last -> 1/3; B (.9, .3, .2) -> 1;
    #   dataset (1, 0, 1) -> P 1/2 at R 1 -> 1/2.
    rows = result["rows"]
    assert rows["a"]["per_class"] == {DOG: pytest.approx(5 / 6), CAT: pytest.approx(1 / 3)}
    assert rows["b"]["per_class"] == {DOG: pytest.approx(7 / 12), CAT: pytest.approx(1.0)}
    assert rows["dataset"]["per_class"] == {DOG: pytest.approx(7 / 12), CAT: pytest.approx(1 / 2)}
    means = (rows["a"]["mean"], rows["b"]["mean"], rows["dataset"]["mean"])
    assert means == (pytest.approx(7 / 12), pytest.approx(19 / 24), pytest.approx(13 / 24))
    assert result["classes"][0]["mean_confidence"] == pytest.approx(4.0)  # 5, 4, 3

    # Another rater gets another order; alice's stays hers.
    driver.find_element("id", "switch").click()
    driver.find_element("id", "rater-input").send_keys("bob", Keys.ENTER)
    prefix = f"spa-listening/{manifest['study_id']}/rater/"
    orders = driver.execute_script(
        "return [JSON.parse(localStorage.getItem(arguments[0] + 'alice')).order,"
        " JSON.parse(localStorage.getItem(arguments[0] + 'bob')).order]", prefix)  # fmt: skip
    assert orders[0] == seen and sorted(orders[1]) == sorted(seen) and orders[1] != seen
    assert text(driver, "answered") == "0 of 6 answered"
