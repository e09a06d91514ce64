"""Browser tests: the Studio in headless Chromium (Debian's ``chromium``, driven by Python
Playwright) against a real ``tunelab serve`` on 127.0.0.1 with the tiny random base model.

Skipped, with the reason, when Playwright or a chromium binary is missing (``.ci/run``
installs chromium). Every page's JavaScript console errors fail the test that caused them.
Screenshots go to ``tests/e2e/screenshots/`` (git-ignored; CI keeps them as artifacts).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))

from service_harness import Service, wait_op  # noqa: E402

SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
USERS = {"alice": "alice-password-1", "bob": "bob-password-22"}

pytestmark = pytest.mark.e2e


def _chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Python Playwright is not installed (pip install -e '.[dev]')")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium; .ci/run does it)")
    return exe


@pytest.fixture(scope="session")
def browser():
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def start_studio(home: Path, env: dict | None = None) -> Service:
    """A real server for the browser, with the users of ``USERS``."""
    _chromium()
    svc = Service(home, env=env).start()
    from tunelab.auth.accounts import Accounts
    from tunelab.config import Settings
    from tunelab.store import Store

    settings = Settings(home=svc.home)
    store = Store.open(settings)
    accounts = Accounts(store, settings)
    for name, password in USERS.items():
        accounts.add_user(name, password)
    return svc


@pytest.fixture(scope="module")
def studio_service(tmp_path_factory):
    """A server whose jobs take a visible while (0.05 s per step), with two users."""
    svc = start_studio(tmp_path_factory.mktemp("studio-home"),
                       {"TUNELAB_STEP_DELAY_SECONDS": "0.05"})
    yield svc
    svc.stop()


class ConsoleErrors:
    """JavaScript errors and console.error calls seen by a page."""

    def __init__(self, page):
        self.items: list[str] = []
        self.expected: list[tuple[str, int]] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.items.append(f"pageerror: {exc}"))

    def expect(self, url_part: str, status: int) -> None:
        """A failed request the page provokes on purpose and handles (Chromium logs every
        4xx answer to fetch as a console error), e.g. the 400 that reports bad training
        data. Only these exact (URL, status) pairs are tolerated."""
        self.expected.append((url_part, status))

    def _console(self, msg) -> None:
        url = msg.location.get("url", "")
        m = re.match(r"Failed to load resource: the server responded with a status of (\d+)",
                     msg.text)
        if m and any(part in url and int(m.group(1)) == code for part, code in self.expected):
            return
        if msg.type == "error":
            self.items.append(f"console.error: {msg.text} ({msg.location.get('url', '')})")


@pytest.fixture
def new_page(browser, studio_service):
    """new_page() → (page, errors); every page is checked for console errors at the end."""
    pages = []

    def make():
        ctx = browser.new_context(viewport={"width": 1280, "height": 900},
                                  base_url=studio_service.url)
        page = ctx.new_page()
        page.set_default_timeout(120_000)
        errors = ConsoleErrors(page)
        pages.append((ctx, errors))
        return page, errors

    yield make
    seen = [e for _, errs in pages for e in errs.items]
    for ctx, _ in pages:
        ctx.close()
    assert not seen, "JavaScript console errors:\n" + "\n".join(seen)


def screenshot(page, name: str) -> None:
    """Desktop (1280 px) and mobile (375 px) full-page screenshots of the current page."""
    SCREENSHOTS.mkdir(exist_ok=True)
    size = page.viewport_size
    page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 812})
    page.wait_for_timeout(150)
    width = page.evaluate("document.documentElement.scrollWidth")
    page.screenshot(path=str(SCREENSHOTS / f"{name}-mobile.png"), full_page=True)
    page.set_viewport_size(size)
    assert width <= 375, f"{name}: the page is {width}px wide at a 375px viewport"


def sign_in(page, user: str, password: str | None = None, *, library: bool = True) -> None:
    """Sign in on the Studio's page (with ``USERS``' password unless one is given); waits for
    My Library unless ``library`` is False (a one-time password is asked to change first)."""
    page.goto("/studio/")
    page.wait_for_selector("#signin")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password or USERS[user])
    page.keyboard.press("Enter")
    if library:
        page.wait_for_selector("h1:has-text('My Library')")


def open_model(page, model_id: str) -> None:
    """The model page, once its title and epochs are drawn."""
    page.goto(f"/studio/#/models/{model_id}")
    page.wait_for_selector("#m-title")
    page.wait_for_selector("#epochs")


class Client:
    """A user's REST client, to set the scene without a browser and to check what a page
    shows."""

    def __init__(self, svc: Service, user: str):
        token = svc.oauth_token(username=user, password=USERS[user])
        self.c = httpx.Client(base_url=svc.url, timeout=120,
                              headers={"Authorization": f"Bearer {token}"})

    def tune(self, model_id: str, examples: list[dict], *, wait: bool = True, **hp) -> dict:
        """Tune ``model_id`` on the tiny model; the finished operation (``wait``) or the
        first answer."""
        r = self.c.post("/v1beta/tunedModels", params={"tunedModelId": model_id}, json={
            "displayName": model_id.capitalize(), "baseModel": "models/tiny-random",
            "tuningTask": {"trainingData": {"examples": {"examples": examples}},
                           "hyperparameters": hp}})
        assert r.status_code == 200, r.text
        return wait_op(self.c, r.json()["name"]) if wait else r.json()

    def share(self, model_id: str, user: str, role: str) -> None:
        """Share with ``user`` as ``role`` (replacing a share they had)."""
        perms = self.c.get(f"/v1beta/tunedModels/{model_id}/permissions").json()["permissions"]
        for p in perms:
            if p.get("emailAddress") == user:
                self.c.delete(f"/v1beta/{p['name']}")
        r = self.c.post(f"/v1beta/tunedModels/{model_id}/permissions",
                        json={"granteeType": "USER", "emailAddress": user, "role": role})
        assert r.status_code == 200, r.text

    def roles(self, model_id: str) -> dict:
        perms = self.c.get(f"/v1beta/tunedModels/{model_id}/permissions").json()["permissions"]
        return {p.get("emailAddress"): p["role"] for p in perms}
