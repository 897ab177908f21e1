"""Fixtures of the console's browser tests: Debian's chromium under Playwright, a page per test
at 1280 px that fails on any script error or Content-Security-Policy violation, the admin API
and the edge for arranging and checking (real services, never mocked), axe-core, screenshots.

Everything comes from scripts/test-console.sh's environment; nothing is skipped: a service
or a browser that cannot be reached fails the test.
"""

import json
import os
import time
import urllib.error
import urllib.request
import uuid

import pytest
from playwright.sync_api import sync_playwright

ADMIN = os.environ.get("CONSOLE_ADMIN_URL", "http://127.0.0.1:9081")
EDGE = os.environ.get("CONSOLE_EDGE_URL", "http://127.0.0.1:8080")
CONSUMER = os.environ.get("CONSOLE_CONSUMER_URL", "http://127.0.0.1:8084")
PUBLIC = os.environ.get("CONSOLE_PUBLIC_URL", "http://127.0.0.1:8081")
ADMIN_KEY = "dev-admin-key"  # config/dev.yaml auth.admin_tokens
DATA_KEY = "your-secret-key"  # config/dev.yaml auth.tokens
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS", "var/console-screenshots")
# Flags for a sandboxed root run on a machine with no network beyond loopback: no GPU, no
# QUIC, none of Chrome's background connections (refused here, and slow to fail).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


class Http:
    """The real services over HTTP: `request` answers (status, headers, parsed body)."""

    def request(self, method, url, body=None, key=ADMIN_KEY, headers=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=15) as res:
                raw = res.read()
                return res.status, dict(res.headers.items()), _parse(raw)
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), _parse(err.read())

    def admin(self, method, path, body=None, key=ADMIN_KEY, headers=None):
        return self.request(method, ADMIN + path, body, key, headers)

    def ingest(self, event, key=DATA_KEY):
        return self.request("POST", EDGE + "/ingest", event, key)

    def eventually(self, what, check, timeout=60, every=0.25):
        """Polls `check` until it returns something truthy; fails naming `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(every)
        pytest.fail(f"{what}: not within {timeout} s (last: {last!r})")


def _parse(raw):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


@pytest.fixture(scope="session")
def http():
    h = Http()
    status, _, body = h.admin("GET", "/readyz", key=None)
    assert status == 200, f"the gateway's admin listener {ADMIN} is not ready: {status} {body}"
    return h


@pytest.fixture
def unique():
    """A name no other test or run uses (sources, keys)."""
    return f"console-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        # Playwright starts the browser with a fresh, empty --user-data-dir of its own (and
        # refuses one passed in `args`); each test then gets a new context of its own.
        b = p.chromium.launch(
            executable_path=os.environ.get("CONSOLE_CHROMIUM", "/usr/bin/chromium"),
            args=CHROMIUM_ARGS,
            headless=True,
        )
        yield b
        b.close()


class Console:
    """One page of the console, and what a test does with it."""

    def __init__(self, page, name):
        self.page = page
        self.name = name
        self.problems = []
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))

    def _console(self, msg):
        text = msg.text
        # A failed fetch of an API call the test expects to fail (403, 412, 400) is logged by
        # Chromium as a resource error: that is the API's answer, shown by the console.
        if msg.type == "error" and "Failed to load resource" not in text:
            self.problems.append(f"console error: {text}")
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.problems.append(f"CSP violation: {text}")

    def open(self, fragment=""):
        self.page.goto(f"{ADMIN}/console{fragment}")
        return self

    def login(self, key=ADMIN_KEY):
        self.open()
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_label("API key").press("Enter")
        self.page.get_by_role("heading", name="Health", exact=True).wait_for()
        return self

    def go(self, fragment):
        self.page.goto(f"{ADMIN}/console#{fragment}")

    def axe(self, what):
        """axe-core on the page as it is now: no serious or critical violation."""
        with open(os.environ["CONSOLE_AXE"], encoding="utf-8") as f:
            source = f.read()
        # Evaluated through the DevTools protocol, not as a page script: the page's CSP (rightly)
        # refuses inline scripts and eval, so axe cannot be injected with a <script> tag.
        if not self.page.evaluate("() => typeof axe !== 'undefined'"):
            self.page.evaluate(source + "\n;true")
        result = self.page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
        bad = [
            f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:5]}"
            for v in result["violations"]
            if v.get("impact") in ("serious", "critical")
        ]
        assert not bad, f"axe-core on {what}: " + "; ".join(bad)
        return result

    def shot(self, name):
        """Screenshots at 1280 px in light and in dark (prefers-color-scheme)."""
        os.makedirs(SHOTS, exist_ok=True)
        for scheme in ("light", "dark"):
            self.page.emulate_media(color_scheme=scheme)
            self.page.wait_for_timeout(100)
            self.page.screenshot(path=os.path.join(SHOTS, f"{name}-{scheme}.png"), full_page=True)
        self.page.emulate_media(color_scheme="light")


@pytest.fixture
def console(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    page = context.new_page()
    page.set_default_timeout(15000)
    c = Console(page, request.node.name)
    yield c
    problems = list(c.problems)
    context.close()
    assert not problems, "the page reported: " + "; ".join(problems)
