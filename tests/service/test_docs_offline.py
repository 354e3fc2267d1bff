"""``/docs`` and ``/redoc`` work offline: their scripts come from the installed package.

The slow tests load both pages from a real ``inferprune serve`` in headless Chromium
that cannot resolve any host name (so a CDN fetch fails) and read the rendered DOM:
it must list the job routes, and Chromium's network log must show that the pages
asked nothing of any host but ours.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from service.api.docs import CONTENT_SECURITY_POLICY
from service.client import wait_for_local_server
from service.settings import Settings
from service.store import make_engine, upgrade_schema
from tests.service._processes import Process, free_port

JOB_ROUTES = ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events")


class _Elements(HTMLParser):
    """Every start tag's attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Elements:
    elements = _Elements()
    elements.feed(html)
    return elements


@pytest.fixture
def docs_client(tmp_path: Path) -> Iterator[TestClient]:
    from service.api.app import create_app

    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", db_url=url))) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_another_host(docs_client: TestClient, page: str) -> None:
    response = docs_client.get(page)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    linked = [
        attrs.get("src") or attrs.get("href") or attrs.get("spec-url") or ""
        for _, attrs in _parse(response.text).tags
    ]
    linked = [link for link in linked if link]
    assert any(link.endswith(".js") for link in linked), linked
    for link in linked:
        assert not urlsplit(link).netloc, f"{page} loads {link} from another host"
        assert docs_client.get(link).status_code == 200, link
    assert "cdn" not in response.text.lower()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a real ``inferprune serve`` (embedded store, no workers)."""
    data = tmp_path_factory.mktemp("docs-server")
    server = Process(
        ["serve", "--workers", "0", "--port", str(free_port()), "--data-dir", str(data)],
        data / "server.log",
    )
    try:
        client = wait_for_local_server(data, server.popen, timeout=90)
        yield client.server
        client.close()
    finally:
        server.stop()


def _render(browser: str, url: str, work: Path) -> tuple[str, list[dict[str, str]]]:
    """Return the DOM after scripts ran, and the requests the page started."""
    net_log = work / "net-log.json"
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={work / 'profile'}",
        # no host name resolves: a script or style from a CDN cannot load
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--log-net-log={net_log}",
        "--virtual-time-budget=30000",  # let the page fetch its spec and render
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [
        event["params"]
        for event in log["events"]
        if event["type"] == start_job and "url" in event.get("params", {})
    ]
    return done.stdout, requests


@pytest.mark.slow
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_render_the_job_routes_in_a_browser_offline(served: str, page: str) -> None:
    browser = _chromium()
    if browser is None:
        reason = "no chromium on PATH (apt-get install -y chromium; .ci/run does)"
        if os.environ.get("INFERPRUNE_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"a browser is required here: {reason}")
        pytest.skip(reason)
    origin = served.rstrip("/")
    with tempfile.TemporaryDirectory() as work:
        dom, requests = _render(browser, origin + page, Path(work))

    # every request the page itself made went to our server, and the script was one
    from_page = [r["url"] for r in requests if r.get("initiator") == origin]
    assert [url for url in from_page if not url.startswith(origin + "/")] == []
    assert any(url.endswith(".js") for url in from_page), from_page
    assert urljoin(origin, "/openapi.json") in from_page

    elements = _parse(dom)
    if page == "/docs":  # Swagger UI: one opblock per operation, its path in data-path
        paths = {
            attrs.get("data-path")
            for _, attrs in elements.tags
            if "opblock-summary-path" in attrs.get("class", "")
        }
    else:  # ReDoc: each operation's path is shown beside it
        text = " ".join(elements.text)
        assert "Submit a pruning job" in text and "Read a job" in text
        paths = {route for route in JOB_ROUTES if route in text}
    assert set(JOB_ROUTES) <= paths, sorted(p for p in paths if p)
