"""The dashboard in a real browser: headless Chromium (Debian's) drives the page that Envoy serves.

A tenant signs in (a wrong key is refused with a message), sees calls it submits move to their
final states without reloading, filters them by state, tag and creation time, pages through
them, opens one and sees its attempt on the timeline, and cancels a scheduled one. Every check
reads the DOM; screenshots of each step go to .run/test-artifacts/dashboard/ for people.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from meshctl.layout import ROOT, Layout
from meshctl.sink import Sink
from tests.browser import Browser, Page
from tests.conftest import KeyRing
from tests.e2e.conftest import JsonClient

ARTIFACTS = ROOT / ".run" / "test-artifacts" / "dashboard"


@pytest.fixture(scope="module")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium, installed on first use (scripts/infra/chromium.sh)."""
    found = subprocess.run(
        [str(ROOT / "scripts" / "infra" / "chromium.sh"), "path"],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return found.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
async def browser(
    chromium: str, artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Browser]:
    # One browser for the module; each test gets a tab of its own.
    browser = await Browser.launch(
        chromium, tmp_path_factory.mktemp("chromium-profile"), artifacts / "chromium.log"
    )
    yield browser
    await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    page = await browser.new_page()
    yield page
    await page.close()


@pytest.fixture
def tenant(key_ring: KeyRing) -> Iterator[str]:
    # A tenant of its own: its lists hold exactly the calls this test submits.
    name = f"dash-{uuid.uuid4().hex[:10]}"
    key_ring.for_tenant(name)
    yield name


class Shots:
    def __init__(self, page: Page, directory: Path, prefix: str) -> None:
        self._page, self._directory, self._prefix = page, directory, prefix
        self._count = 0

    async def take(self, step: str) -> None:
        self._count += 1
        await self._page.screenshot(
            self._directory / f"{self._prefix}-{self._count:02d}-{step}.png"
        )


async def sign_in(page: Page, tenant: str, key: str) -> None:
    await page.type("#tenant-id", tenant)
    await page.type("#api-key", key)
    await page.click("#sign-in-button")


def visible(selector: str) -> str:
    """JavaScript: the element is there and shown (neither it nor an ancestor hidden)."""
    return (
        f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
        " return !!e && !e.hidden && e.offsetParent !== null; })()"
    )


def text_of(selector: str) -> str:
    return f"((document.querySelector({json.dumps(selector)}) || {{}}).textContent || '')"


LISTED = "[...document.querySelectorAll('#call-rows tr')].map((r) => r.dataset.callId)"


async def listed_exactly(page: Page, ids: set[str], what: str) -> None:
    await page.wait_for(
        f"(() => {{ const ids = {LISTED}; return ids.length === {len(ids)} && "
        f"{json.dumps(sorted(ids))}.every((id) => ids.includes(id)); }})()",
        what,
    )


def row_state(call_id: str) -> str:
    """JavaScript: the state the list shows for a call (undefined while it is not listed)."""
    row = f"document.querySelector('tr[data-call-id=\"{call_id}\"]')"
    return f"({row} || {{dataset: {{}}}}).dataset.state"


COUNTS = (
    "Object.fromEntries([...document.querySelectorAll('#count-list button')]"
    ".map((b) => [b.dataset.state, b.dataset.count]))"
)


def first_page_of(ids: set[str]) -> str:
    """JavaScript: ten of `ids` listed, and a next page to go to. Only the answer to the filter
    last applied enables "Next": until it comes, the page on screen answers the one before."""
    return (
        f"(() => {{ const ids = {LISTED}; return ids.length === 10 && "
        f"ids.every((id) => {json.dumps(sorted(ids))}.includes(id)) && "
        "!document.querySelector('#next-page').disabled; })()"
    )


def submit_many(json_api: JsonClient, tenant: str, count: int, tags: list[str]) -> set[str]:
    """`count` calls due in an hour (they stay SCHEDULED), tagged `tags`, in one batch."""
    batch = json_api.request(
        "POST",
        f"/v1/tenants/{tenant}/service-calls:batchSubmit",
        {
            "items": [
                {
                    "serviceCall": {"request": {"url": "http://127.0.0.1:9/never"}, "tags": tags},
                    "delay": "3600s",
                }
                for _ in range(count)
            ]
        },
    )
    assert batch.status == 200 and all("serviceCall" in r for r in batch.body["results"])
    return {r["serviceCall"]["serviceCallId"] for r in batch.body["results"]}


def submit(json_api: JsonClient, tenant: str, body: dict[str, object]) -> str:
    response = json_api.request("POST", f"/v1/tenants/{tenant}/service-calls", body)
    assert response.status == 201, response.body
    call_id: str = response.body["serviceCallId"]
    return call_id


def test_envoy_serves_the_dashboard(running_mesh: Layout) -> None:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(running_mesh.public_url + "/", timeout=10)
    assert redirect.value.code == 302
    assert redirect.value.headers["location"] == "/dashboard/"
    for path, content_type in [
        ("/dashboard/", "text/html; charset=utf-8"),
        ("/dashboard/dashboard.js", "text/javascript; charset=utf-8"),
        ("/dashboard/api.js", "text/javascript; charset=utf-8"),
        ("/dashboard/dashboard.css", "text/css; charset=utf-8"),
    ]:
        with urllib.request.urlopen(running_mesh.public_url + path, timeout=10) as response:
            assert response.status == 200
            assert response.headers["content-type"] == content_type
            assert response.headers["cache-control"] == "no-cache"
            assert "script-src 'self'" in response.headers["content-security-policy"]
            name = "index.html" if path.endswith("/") else path.rsplit("/", 1)[1]
            assert response.read() == (ROOT / "dashboard" / name).read_bytes()


async def test_a_wrong_key_is_refused_with_a_message(
    running_mesh: Layout, page: Page, tenant: str, artifacts: Path
) -> None:
    shots = Shots(page, artifacts, "wrong-key")
    await page.goto(running_mesh.public_url + "/")  # Envoy leads / to /dashboard/
    assert await page.evaluate("location.pathname") == "/dashboard/"
    await page.wait_for(visible("#sign-in-form"), "the sign-in form")
    await shots.take("sign-in")

    await sign_in(page, tenant, "sck_not-a-key-of-anyone")
    await page.wait_for(visible("#sign-in-error"), "an error under the sign-in form")
    assert "not accepted" in await page.evaluate(text_of("#sign-in-error"))
    assert await page.evaluate("document.querySelector('#app').hidden")
    assert await page.evaluate("sessionStorage.length") == 0
    assert await page.evaluate("document.activeElement.id") == "api-key"
    await shots.take("refused")

    await sign_in(page, "no tenant!", "sck_x")
    await page.wait_for(
        f"{text_of('#sign-in-error')}.includes('Enter a tenant id')", "the tenant id's format"
    )
    assert page.errors == []


async def test_a_tenant_follows_its_calls_without_reloading(
    running_mesh: Layout,
    prometheus: Layout,
    page: Page,
    tenant: str,
    key_ring: KeyRing,
    json_api: JsonClient,
    sink: Sink,
    artifacts: Path,
) -> None:
    shots = Shots(page, artifacts, "tenant")
    await page.goto(running_mesh.public_url + "/dashboard/")
    await sign_in(page, tenant, key_ring.for_tenant(tenant))
    await page.wait_for(visible("#app"), "the signed-in view")
    assert await page.evaluate(text_of("#who-tenant")) == tenant
    await page.wait_for(f"{text_of('#freshness')}.startsWith('Updated')", "a first refresh")
    await page.wait_for(visible("#list-empty"), "an empty list for a new tenant")
    assert set((await page.evaluate(COUNTS)).values()) == {"0"}
    # Set on this document only: if the page reloaded, it would be gone.
    await page.evaluate("window.stillTheSamePage = true")
    await shots.take("signed-in")

    # Submitted behind the page's back, through the API: the page must find them by polling.
    ok = submit(
        json_api,
        tenant,
        {"serviceCall": {"request": {"url": sink.url("/dashboard/ok")}, "tags": ["dash-ok"]}},
    )
    failing = submit(
        json_api,
        tenant,
        {
            "serviceCall": {
                "request": {"url": sink.url("/status/500")},
                "tags": ["dash-fail"],
                "retryPolicy": {"maxAttempts": 1},
            }
        },
    )
    later = submit(
        json_api,
        tenant,
        {
            "serviceCall": {
                "request": {"url": sink.url("/dashboard/later")},
                "tags": ["dash-later"],
            },
            "delay": "3600s",
        },
    )
    await page.wait_for(f"{row_state(ok)} === 'SUCCEEDED'", "the call due now as SUCCEEDED")
    await page.wait_for(f"{row_state(failing)} === 'FAILED'", "the failing call as FAILED")
    assert await page.evaluate(row_state(later)) == "SCHEDULED"
    assert await page.evaluate("window.stillTheSamePage") is True
    assert any(a.path == "/dashboard/ok" for a in sink.arrivals)
    expected = {"SCHEDULED": "1", "DISPATCHED": "0", "RUNNING": "0"}
    expected |= {"SUCCEEDED": "1", "FAILED": "1", "CANCELED": "0"}
    await page.wait_for(
        f"JSON.stringify({COUNTS}) === {json.dumps(json.dumps(expected, separators=(',', ':')))}",
        f"counts {expected}",
    )
    await shots.take("calls-finished")

    # Filters: by state (the select, then a count's button), by tag, by creation time.
    await page.choose("#filter-state", "SUCCEEDED")
    await listed_exactly(page, {ok}, "only the succeeded call")
    await shots.take("filter-succeeded")
    await page.click("#count-list button[data-state='FAILED']")
    await listed_exactly(page, {failing}, "only the failed call")
    assert await page.evaluate("document.querySelector('#filter-state').value") == "FAILED"
    await page.click("#clear-filters")
    await listed_exactly(page, {ok, failing, later}, "all three calls again")
    await page.type("#filter-tags", "dash-later")
    await page.press("Enter", 13)
    await listed_exactly(page, {later}, "only the call tagged dash-later")
    await shots.take("filter-tag")
    await page.choose("#filter-state", "SUCCEEDED")
    await page.wait_for(visible("#list-empty"), "no call both SUCCEEDED and tagged dash-later")
    await page.click("#clear-filters")
    await page.choose("#filter-created", "900")
    await listed_exactly(page, {ok, failing, later}, "all three created in the last 15 minutes")
    await page.choose("#filter-created", "between")
    await page.wait_for(visible("#filter-from"), "the time range's inputs")
    # datetime-local is in the browser's time zone, which is this machine's, like Python's.
    an_hour_ahead = datetime.now().astimezone() + timedelta(hours=1)
    await page.choose("#filter-from", an_hour_ahead.strftime("%Y-%m-%dT%H:%M:%S"))
    await page.wait_for(visible("#list-empty"), "no call created from an hour ahead")
    await page.click("#clear-filters")
    await listed_exactly(page, {ok, failing, later}, "all three calls after clearing")

    # Paging: eleven calls with one tag, ten per page.
    batch = json_api.request(
        "POST",
        f"/v1/tenants/{tenant}/service-calls:batchSubmit",
        {
            "items": [
                {
                    "serviceCall": {
                        "request": {"url": sink.url(f"/dashboard/page/{i}")},
                        "tags": ["dash-page"],
                    },
                    "delay": "3600s",
                }
                for i in range(11)
            ]
        },
    )
    assert batch.status == 200 and all("serviceCall" in r for r in batch.body["results"])
    paged = {r["serviceCall"]["serviceCallId"] for r in batch.body["results"]}
    await page.choose("#page-size", "10")
    await page.type("#filter-tags", "dash-page")
    await page.press("Enter", 13)
    await page.wait_for(first_page_of(paged), "a first page of ten calls tagged dash-page")
    first = set(await page.evaluate(LISTED))
    await page.click("#next-page")
    await page.wait_for(f"{text_of('#page-label')} === 'Page 2' && {LISTED}.length === 1", "page 2")
    second = set(await page.evaluate(LISTED))
    assert first | second == paged and not first & second
    assert await page.evaluate("document.querySelector('#next-page').disabled")
    await shots.take("page-2")
    await page.click("#prev-page")
    await page.wait_for(
        f"{text_of('#page-label')} === 'Page 1' && {LISTED}.length === 10", "page 1"
    )
    await page.click("#clear-filters")  # back to 25 a page: all fourteen calls
    await listed_exactly(page, {ok, failing, later} | paged, "every call on one page")

    # A call's detail: its attempt on the timeline.
    await page.click(f"tr[data-call-id='{ok}'] button.open-call")
    await page.wait_for(visible("#detail"), "the call's detail")
    attempt = "#timeline li[data-kind='attempt'][data-attempt='1']"
    await page.wait_for(f'!!document.querySelector("{attempt}")', "attempt 1 on the timeline")
    assert (
        await page.evaluate(f'document.querySelector("{attempt}").dataset.outcome') == "SUCCEEDED"
    )
    assert "HTTP 200" in await page.evaluate(text_of(attempt))
    kinds = await page.evaluate(
        "[...document.querySelectorAll('#timeline li')].map((li) => li.dataset.kind)"
    )
    # A finished call has no due time in the API (schedule_time belongs to waiting states).
    assert kinds == ["submitted", "attempt-start", "attempt", "complete"]
    assert ok in await page.evaluate(text_of("#detail-title"))
    assert await page.evaluate("document.querySelector('#cancel-call').hidden")
    await shots.take("detail")

    # Cancel the scheduled one from its detail.
    await page.click(f"tr[data-call-id='{later}'] button.open-call")
    await page.wait_for(visible("#cancel-call"), "a cancel button for a scheduled call")
    kinds = await page.evaluate(
        "[...document.querySelectorAll('#timeline li')].map((li) => li.dataset.kind)"
    )
    assert kinds == ["submitted", "now", "due"]  # due in an hour
    await page.click("#cancel-call")
    await page.wait_for(f"{text_of('#detail-message')} === 'Canceled.'", "the cancel confirmed")
    await page.wait_for(f"{row_state(later)} === 'CANCELED'", "the list showing it CANCELED")
    got = json_api.request("GET", f"/v1/tenants/{tenant}/service-calls/{later}")
    assert got.body["state"] == "CANCELED"
    await shots.take("canceled")

    # Mesh health: figures from the test mesh's Prometheus (the `prometheus` fixture), through
    # Envoy's /prometheus/ route.
    await page.wait_for(
        "document.querySelector('#health-status').dataset.status === 'ok'", "mesh health"
    )
    await page.wait_for(visible("#health-figures"), "the health figures")
    assert await page.evaluate("window.stillTheSamePage") is True
    assert page.errors == []


async def test_a_page_turned_as_a_filter_is_applied_follows_the_new_filter(
    running_mesh: Layout, page: Page, tenant: str, key_ring: KeyRing, json_api: JsonClient
) -> None:
    # Regression (CI flake of the test above): the page kept the last answer's next-page
    # token while a new filter's first page was on its way, and every refresh read the form
    # as it stood. "Next" clicked in between followed the old filter's token with the new
    # filter, which the API refuses; a relative "Created" window, recomputed at each
    # refresh, did the same to every page 2.
    tagged = submit_many(json_api, tenant, 11, ["dash-turn"])
    submit_many(json_api, tenant, 3, [])  # newer: the unfiltered first page holds them
    await page.goto(running_mesh.public_url + "/dashboard/")
    await sign_in(page, tenant, key_ring.for_tenant(tenant))
    await page.wait_for(visible("#app"), "the signed-in view")
    await page.choose("#page-size", "10")
    await page.wait_for(
        f"{LISTED}.length === 10 && !document.querySelector('#next-page').disabled",
        "an unfiltered first page of ten, with a next page",
    )
    # The filter applied and "Next" clicked in one turn of the page's event loop, before
    # any answer to the new filter can come: deterministic, where a person's click races.
    await page.evaluate(
        """(() => {
          document.querySelector('#filter-tags').value = 'dash-turn';
          document.querySelector('#filters').requestSubmit();
          document.querySelector('#next-page').click();
        })()"""
    )
    await page.wait_for(first_page_of(tagged), "the new filter's first page")
    assert await page.evaluate(text_of("#page-label")) == "Page 1"
    assert await page.evaluate("document.querySelector('#filter-error').hidden")

    # A relative window: page 2 goes on from page 1's window, which moved on meanwhile.
    await page.choose("#filter-created", "900")
    await page.wait_for(first_page_of(tagged), "page 1 of the calls created in 15 minutes")
    first = set(await page.evaluate(LISTED))
    await page.click("#next-page")
    await page.wait_for(f"{text_of('#page-label')} === 'Page 2' && {LISTED}.length === 1", "page 2")
    assert first | set(await page.evaluate(LISTED)) == tagged
    assert await page.evaluate("document.querySelector('#filter-error').hidden")
    assert page.errors == []
