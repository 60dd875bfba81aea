"""Page helpers for driving the Prefect 3.8.8 UI (default "V1" Vue UI) with Playwright.

Helper module for browser tests, not a test module: nothing here starts with
``test_``. Use the sync Playwright API with the Debian chromium binary::

    with launch() as page:
        open_flow_run(page, "http://127.0.0.1:4310", flow_run_id)
        assert graph_visible(page)
        names = task_run_names(page)          # e.g. ["S2 mass_emailing", "S1 emailing"]
        keys = open_artifacts(page)           # e.g. ["demo-op-report", "demo-op-funnel"]
        req = retry(page)                     # {"method": "POST", "path": ".../set_state", ...}
        shot(page, "/tmp/flow_run.png")

Things learned against a real 3.8.8 server:

* Flow run page: ``{base}/runs/flow-run/{id}``. The ``?tab=...`` query string
  the UI writes on tab clicks does *not* select the tab on a fresh load, so
  tabs are always clicked (``li.p-tab#task-runs``, ``li.p-tab#artifacts``);
  their panels are ``section#<tab-id>-content``.
* Task run names are shown as given by ``task_run_name`` (run-operation names them
  ``"S1 emailing"``); a task named only by ``name=`` gets a generated suffix (``"-003"``).
* Retry only exists for deployment runs; it opens a confirmation modal
  (``role=dialog``) whose own "Retry" button sends
  ``POST /api/flow_runs/{id}/set_state`` with
  ``{"state": {"name": "AwaitingRetry", "message": "Retry from the UI",
  "type": "SCHEDULED"}, "force": false}``.
* The page body never scrolls; the scroller is ``div.app-router-view``, so
  :func:`shot` grows the viewport to get a real full-page image.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from playwright.sync_api import Locator, Page, Request, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DEFAULT_TIMEOUT_MS = 20_000

# Selectors (Prefect UI 3.8.8, prefect-design components).
HEADER = ".page-heading-flow-run"
HEADER_STATE = f"{HEADER} .state-badge"
TABS = ".p-tab-navigation"
GRAPH_CANVAS = ".run-graph canvas"
TASK_RUN_COUNT = "#task-runs-content .results-count"
TASK_RUN_NAME = "#task-runs-content .task-run-list-item__breadcrumbs a"
ARTIFACT_TITLE = "#artifacts-content .artifact-card__title"
ARTIFACT_NONE = "#artifacts-content .flow-run-artifacts__none"
SCROLLER = ".app-router-view"


@contextmanager
def launch(
    timeout_ms: int = DEFAULT_TIMEOUT_MS, width: int = 1400, height: int = 900
) -> Iterator[Page]:
    """Start headless Debian chromium and yield a fresh page.

    Every Playwright wait on the page uses ``timeout_ms`` as its default.
    The browser is closed on exit, also when the body raises.
    """
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            page.set_default_navigation_timeout(timeout_ms)
            yield page
        finally:
            browser.close()


def flow_run_url(base_url: str, flow_run_id: Any) -> str:
    """URL of a flow run page; ``base_url`` is the UI root, e.g. ``http://127.0.0.1:4310``."""
    return f"{base_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


def open_flow_run(page: Page, base_url: str, flow_run_id: Any) -> None:
    """Go to the flow run page and wait until its header and tab bar are rendered.

    Waits for the state badge in the run header (it only appears once the
    flow run was fetched from the API) and for the tab bar.
    """
    page.goto(flow_run_url(base_url, flow_run_id))
    page.locator(HEADER_STATE).wait_for()
    page.locator(TABS).wait_for()


def flow_run_state(page: Page) -> str:
    """State name shown in the header badge, e.g. ``"Failed"`` or ``"AwaitingRetry"``."""
    return page.locator(HEADER_STATE).inner_text().strip()


def graph_canvas(page: Page) -> Locator:
    """The timeline/DAG canvas (WebGL) at the top of the flow run page."""
    return page.locator(GRAPH_CANVAS).first


def graph_visible(page: Page) -> bool:
    """Wait for the run graph canvas and report whether it has a non-empty size."""
    canvas = graph_canvas(page)
    canvas.wait_for(state="visible")
    box = canvas.bounding_box()
    return bool(box and box["width"] > 0 and box["height"] > 0)


def open_tab(page: Page, tab_id: str) -> Locator:
    """Click a flow run tab by its element id and return its panel.

    Ids in 3.8.8: ``logs``, ``task-runs``, ``subflow-runs``, ``artifacts``,
    ``details``, ``parameters``, ``job-variables``.
    """
    page.locator(f"li.p-tab#{tab_id}").click()
    panel = page.locator(f"section#{tab_id}-content")
    panel.wait_for(state="visible")
    return panel


def _settled_texts(locator: Locator, timeout_ms: int, settle_s: float = 0.6) -> list[str]:
    """Poll ``locator``'s texts until two reads ``settle_s`` apart agree."""
    deadline = time.monotonic() + timeout_ms / 1000
    last = [t.strip() for t in locator.all_inner_texts()]
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        now = [t.strip() for t in locator.all_inner_texts()]
        if now == last:
            return now
        last = now
    return last


def task_run_names(page: Page, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> list[str]:
    """Open the "Task Runs" tab and return the displayed task run names.

    Names carry Prefect's generated suffix (``"S1 emailing-003"``); order is
    the UI's default "Newest to Oldest". Waits for the "N Task runs" counter,
    then for N rows (the list is a virtual scroller, so rows are scrolled into
    view until all N are rendered or the timeout passes).
    """
    open_tab(page, "task-runs")
    count_el = page.locator(TASK_RUN_COUNT)
    count_el.wait_for()
    match = re.search(r"\d+", count_el.inner_text())
    expected = int(match.group()) if match else 0
    rows = page.locator(TASK_RUN_NAME)
    if expected == 0:
        return []
    rows.first.wait_for()
    deadline = time.monotonic() + timeout_ms / 1000
    seen: dict[str, None] = {}
    while time.monotonic() < deadline:
        for text in rows.all_inner_texts():
            seen.setdefault(text.strip(), None)
        if len(seen) >= expected:
            break
        rows.last.scroll_into_view_if_needed()
        time.sleep(0.3)
    return list(seen)


def open_artifacts(page: Page, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> list[str]:
    """Open the "Artifacts" tab and return the artifact card titles (keys).

    Cards of flow-run and task-run artifacts are both included. Artifacts
    without a key show their type-derived title instead. Returns ``[]`` when
    both sections say "None".
    """
    open_tab(page, "artifacts")
    page.locator(f"{ARTIFACT_TITLE}, {ARTIFACT_NONE}").first.wait_for()
    return _settled_texts(page.locator(ARTIFACT_TITLE), timeout_ms)


def artifact_text(page: Page, key: str) -> str:
    """Click the first artifact card titled ``key`` (Artifacts tab must be open).

    Navigates to ``/artifacts/artifact/{id}`` and returns the text of the
    artifact body (description plus rendered table/markdown). Use
    ``page.go_back()`` and :func:`open_tab` to return to the flow run.
    """
    card = page.locator("#artifacts-content .artifact-card").filter(
        has=page.locator(".artifact-card__title", has_text=re.compile(rf"^\s*{re.escape(key)}\s*$"))
    )
    card.first.click()
    page.wait_for_url(re.compile(r"/artifacts/artifact/"))
    body = page.locator(".p-layout-well__content")
    page.locator(".p-layout-well__content .artifact-data-view").wait_for()
    return body.inner_text()


def retry(page: Page, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> dict[str, Any]:
    """Click "Retry" in the flow run header, confirm the modal, return the API call.

    Returns ``{"method", "url", "path", "body", "status", "result"}`` of the
    ``POST .../flow_runs/{id}/set_state`` request the confirmation sends
    (``status`` is the HTTP status, 201 on success; ``result`` is the API's
    orchestration ``status`` string, ``"ACCEPT"`` on success). Waits for the modal to
    close. Raises if the button is missing (runs without a deployment, or
    not in a terminal state, have no Retry button).
    """
    page.locator(HEADER).get_by_role("button", name="Retry").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()

    def is_set_state(req: Request) -> bool:
        return req.method == "POST" and req.url.rstrip("/").endswith("/set_state")

    with page.expect_request(is_set_state, timeout=timeout_ms) as req_info:
        dialog.get_by_role("button", name="Retry", exact=True).click()
    request = req_info.value
    response = request.response()
    dialog.wait_for(state="hidden")
    raw = request.post_data
    result = None
    if response is not None and response.ok:
        result = response.json().get("status")
    return {
        "method": request.method,
        "url": request.url,
        "path": urlparse(request.url).path,
        "body": json.loads(raw) if raw else None,
        "status": response.status if response else None,
        "result": result,
    }


def shot(page: Page, path: str | Path, max_height: int = 6000) -> Path:
    """Save a full-page PNG screenshot at ``path`` (parent dirs are created).

    The Prefect UI scrolls inside ``div.app-router-view``, not the document,
    so ``full_page=True`` alone only captures the viewport; the viewport is
    temporarily grown to the scroller's height (capped at ``max_height``).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or {"width": 1400, "height": 900}
    extra = page.evaluate(
        """(sel) => { const e = document.querySelector(sel);
                      return e ? e.scrollHeight - e.clientHeight : 0; }""",
        SCROLLER,
    )
    try:
        if extra > 0:
            page.set_viewport_size(
                {"width": size["width"], "height": min(size["height"] + extra, max_height)}
            )
            page.wait_for_timeout(300)
        page.screenshot(path=str(out), full_page=True)
    finally:
        if extra > 0:
            page.set_viewport_size(size)
    return out
