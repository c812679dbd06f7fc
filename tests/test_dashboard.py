"""The dashboard at GET /: a static page that a real browser (Debian's Chromium, driven by Playwright) loads
from local mode; it shows each job's status and top groups, and updates by itself after a new upload."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from chalicelib.local.client import TallyClient
from chalicelib.local.datagen import write_uservisits
from chalicelib.local.demo import JOBS, wait_until_idle

from .conftest import running_local_tally

CHROMIUM = "/usr/bin/chromium"
# As root on a closed network: no sandbox, and no background requests Chromium would make to Google's hosts.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def test_the_page_is_self_contained_html(lambdas):
    response = lambdas.http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.body.decode() if isinstance(response.body, bytes) else response.body
    assert "<script>" in page and "jobs/" in page
    assert "src=\"http" not in page and "href=\"http" not in page  # no CDN: everything is inline


@pytest.fixture
def local_tally():
    yield from running_local_tally(workers=1, reduce_every=0.3)


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def top_groups(page, job: str) -> list[tuple[str, str]]:
    rows = page.locator(f'section[data-job="{job}"] tr.group')
    return [(row.locator("td.key").inner_text(), row.locator("td.value").inner_text()) for row in rows.all()]


@pytest.mark.slow
def test_dashboard_shows_the_groups_and_updates_after_an_upload(local_tally, browser, tmp_path: Path):
    paths = write_uservisits(tmp_path / "uservisits", total_bytes=512 << 10, file_bytes=256 << 10, seed=5)
    s3 = local_tally.client()
    for path in paths:
        s3.upload_file(str(path), "tally-input", f"uservisits/{path.name}")
    api = TallyClient(local_tally.api_url)
    wait_until_idle(api, list(JOBS), timeout=60)
    expected = api.page("bdb-agg-2a", order_by="adRevenue", desc=True, limit=10)["rows"]

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{local_tally.api_url}/?refresh=0.5")

    section = page.locator('section[data-job="bdb-agg-2a"]')
    section.locator("tr.group").first.wait_for(timeout=20_000)
    assert [key for key, _ in top_groups(page, "bdb-agg-2a")] == [r["key"]["sourceIP_prefix"] for r in expected]
    assert section.locator(".state").inner_text() == "idle"
    assert section.locator('dd[data-fact="merged"]').inner_text() == f"{len(paths)} / {len(paths)}"
    assert section.locator("svg.chart rect").count() == len(expected)  # one bar per group
    for job in ("bdb-agg-2b", "bdb-agg-2c", "bdb-scan-1a", "page-latency"):
        assert page.locator(f'section[data-job="{job}"]').count() == 1

    # A new group far larger than any other arrives: the page shows it on top without being reloaded.
    biggest = Decimal(str(expected[0]["values"]["adRevenue"]))
    s3.put_object(Bucket="tally-input", Key="uservisits/late.csv",
                  Body=f"250.250.1.1,http://x/,2001-01-01,{biggest * 10},ua,USA,USA-EN,w,1\n".encode())
    section.locator('tr.group[data-key="250.250."]').wait_for(timeout=30_000)
    assert top_groups(page, "bdb-agg-2a")[0][0] == "250.250."
    page.wait_for_function(
        "document.querySelector('section[data-job=\"bdb-agg-2a\"] dd[data-fact=\"merged\"]').textContent"
        f" === '{len(paths) + 1} / {len(paths) + 1}'", timeout=30_000)

    # A file that cannot be parsed is listed on the page as quarantined.
    s3.put_object(Bucket="tally-input", Key="uservisits/broken.csv.gz", Body=b"\x1f\x8b\x08\x00garbage")
    section.locator(".quarantine").first.wait_for(timeout=30_000)
    assert "uservisits/broken.csv.gz" in section.locator(".quarantine").first.inner_text()
    assert errors == []
