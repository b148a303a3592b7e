"""The GUI of ``tl serve`` in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (nothing downloaded), against the local edge, moto's Cognito behind the stand-in hosted UI, and the
agent with the stand-in model server. Each state is saved as a screenshot under ``build/gui/``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from devstack.authserver import AuthServer
from devstack.browser import binaries, chromium, console
from devstack.edge import LocalEdgeServer, UserPool, create_user
from devstack.procs import REPO
from devstack.stack import Stack, StandInServer
from jobqueue import contract
from lambdas.common.costs import SPEND_KEY
from lambdas.common.node import HOLD_TAG
from tests.support import PASSWORD
from tlcli.api import Api
from tlcli.serve import Door
from tlcli.tokens import Session

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(binaries() is None, reason="Debian's chromium and chromium-driver: make deps"),
]
SHOTS = REPO / "build" / "gui"
USER = "gui-user"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def gui(
    edge: LocalEdgeServer, pool: UserPool, shared_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Door]:
    create_user(shared_stack, pool, USER, PASSWORD)
    # the door's own session is not logged in: the GUI works with the browser's own sign-in only
    session = Session(tmp_path_factory.mktemp("gui") / "no-login.json")
    door = Door(Api(edge.url, session), 0, poll_s=0.1, keepalive_s=0.5, client_id=pool.client_id)
    with AuthServer(shared_stack, pool, callbacks=[f"{door.gui_url}callback"]) as auth:
        door.auth_domain = auth.url
        door.start()
        yield door
        door.stop()
    shared_stack.stop_agents()


def until(check: Callable[[], Any], timeout_s: float, what: str, browser: Any) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except WebDriverException:
            found = None
        if found:
            return found
        time.sleep(0.1)
    shot(browser, f"failed-{what.replace(' ', '-')[:40]}")
    raise AssertionError(f"{what}: not within {timeout_s} s; the page's console: {console(browser)}")


def shot(browser: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def text(browser: Any, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def answers(browser: Any) -> list[Any]:
    return browser.find_elements(By.CSS_SELECTOR, "#log li.assistant")


def test_sign_in_chat_and_watch_the_node_wake(
    browser: Any, gui: Door, shared_stack: Stack, slow_standin: StandInServer
) -> None:
    stack = shared_stack
    stack.redis.client().flushall()
    stack.ec2().stop_instances(InstanceIds=[stack.instance_id])
    stack.ec2().get_waiter("instance_stopped").wait(InstanceIds=[stack.instance_id])
    stack.s3().put_object(Bucket=stack.bucket, Key=SPEND_KEY, Body=json.dumps(
        {"eur": 1.5, "amount": 1.74, "unit": "USD", "at": "2026-12-03T06:00:00+00:00"}))  # fmt: skip

    # sign in: opened at 127.0.0.1, the page moves to localhost (its callback's origin) and sends us to the hosted UI
    browser.get(gui.url)
    until(lambda: browser.find_element(By.ID, "signin-button").is_displayed(), 15, "the sign-in button", browser)
    assert browser.current_url.startswith(gui.gui_url)
    shot(browser, "1-sign-in")
    browser.find_element(By.ID, "signin-button").send_keys(Keys.ENTER)  # by keyboard
    until(lambda: browser.find_element(By.ID, "username"), 15, "the hosted UI's form", browser)
    browser.find_element(By.ID, "username").send_keys(USER)
    browser.find_element(By.ID, "password").send_keys("wrong-password-1!", Keys.ENTER)
    until(lambda: "Incorrect" in text(browser, "error"), 10, "a wrong password refused", browser)
    browser.find_element(By.ID, "username").clear()
    browser.find_element(By.ID, "username").send_keys(USER)
    browser.find_element(By.ID, "password").send_keys(PASSWORD, Keys.ENTER)
    until(lambda: browser.find_element(By.ID, "chat").is_displayed(), 15, "the chat after the sign-in", browser)
    assert browser.current_url == gui.gui_url  # the code is not left in the address bar
    assert browser.switch_to.active_element.get_attribute("id") == "prompt"  # ready to type

    # asleep, with this month's spend
    until(lambda: "asleep" in text(browser, "node"), 15, "the node asleep", browser)
    assert text(browser, "spend") == "€1.50 of €20 this month"
    shot(browser, "2-asleep")

    # a message wakes it: the router starts the node; the page counts down while the stream waits
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys("Name three colours.", Keys.ENTER)
    until(lambda: "starting, about" in text(browser, "node"), 20, "the node starting", browser)
    until(lambda: "starting, about" in answers(browser)[-1].text, 10, "the wait explained in the reply", browser)
    assert stack.node_state() in ("pending", "running")
    shot(browser, "3-starting")

    # the node's agent comes up: the reply streams in, piece by piece, then the node is ready
    stack.start_agent(slow_standin.url)
    until(lambda: "tok1" in answers(browser)[-1].text and "tok15" not in answers(browser)[-1].text, 30,
          "the reply streaming in", browser)  # fmt: skip
    shot(browser, "4-streaming")
    until(lambda: "length" in answers(browser)[-1].text, 30, "the reply finished", browser)
    assert "".join(f" tok{i}" for i in range(16)).strip() in answers(browser)[-1].text
    until(lambda: text(browser, "node").startswith("node: ready") or "busy" in text(browser, "node"), 15,
          "the node ready", browser)  # fmt: skip
    shot(browser, "5-ready")

    # text from the model is shown as text, never as markup
    prompt.send_keys("[[html]]", Keys.ENTER)
    until(lambda: "length" in answers(browser)[-1].text, 30, "the second reply finished", browser)
    assert "<b>bold?</b>" in answers(browser)[-1].text
    assert not browser.find_elements(By.CSS_SELECTOR, "#log b")

    # readable on a phone-width window: nothing wider than the screen
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def test_a_429_is_explained(browser: Any, gui: Door, edge: LocalEdgeServer, shared_stack: Stack) -> None:
    token = json.loads(browser.execute_script("return sessionStorage.getItem('tl.tokens')"))["id_token"]
    for _ in range(6):  # the user's bucket (5 at once) emptied behind the page's back
        httpx.post(f"{edge.url}/infer", json={"prompt": "x"}, headers={"authorization": f"Bearer {token}"})
    browser.find_element(By.ID, "prompt").send_keys("One more?", Keys.ENTER)
    until(lambda: browser.find_element(By.ID, "notice").is_displayed(), 15, "the 429 notice", browser)
    assert "Too many requests" in text(browser, "notice") and "send it again in" in text(browser, "notice")
    # nothing lost: the refused message is back in the box, not in the conversation
    assert browser.find_element(By.ID, "prompt").get_attribute("value") == "One more?"
    assert "One more?" not in text(browser, "log")
    shot(browser, "6-throttled")
    shared_stack.redis.client().delete(contract.QUEUE_STREAM)


def test_a_held_node_says_so(browser: Any, gui: Door, shared_stack: Stack) -> None:
    shared_stack.stop_agents()
    shared_stack.ec2().stop_instances(InstanceIds=[shared_stack.instance_id])
    shared_stack.ec2().create_tags(Resources=[shared_stack.instance_id], Tags=[{"Key": HOLD_TAG, "Value": "budget"}])
    try:
        until(lambda: "held by the budget" in text(browser, "node"), 15, "the node held", browser)
        shot(browser, "7-held")
    finally:
        shared_stack.ec2().delete_tags(Resources=[shared_stack.instance_id], Tags=[{"Key": HOLD_TAG}])


def test_the_page_is_locked_down(gui: Door) -> None:
    page = httpx.get(gui.url + "/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert "access-control-allow-origin" not in page.headers
    assert "<script" not in page.text.replace('<script src="/gui/app.js" defer></script>', "")  # no inline script
    # the page's key is given to the page, not to another site
    assert httpx.get(f"{gui.url}/gui/config.json", headers={"Origin": "https://evil.example"}).status_code == 403
    # the GUI's calls without the key are refused, even with a valid-looking token
    assert httpx.get(f"{gui.url}/gui/status", headers={"Authorization": "Bearer a.b.c"}).status_code == 403
    bad = httpx.post(f"{gui.url}/gui/token", json={"grant_type": "authorization_code", "code": "x"},
                     headers={"X-TL-Key": gui.key})  # fmt: skip
    assert bad.status_code == 400 and "refused" in bad.json()["error"]["message"]
