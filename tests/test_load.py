"""Load: 2,000 small objects uploaded by 8 client threads while the reducer runs, through `tally local`. Every
object is counted exactly once, nothing is left pending, and the service's memory stays flat.

The service runs the three BDB aggregation jobs: each further job over uservisits/ adds its own marker per
object, and local mode's cost is requests to moto's single-process server, so more jobs would measure moto.
TALLY_LOAD_OBJECTS changes the count."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from chalicelib.local.client import TallyClient
from chalicelib.local.demo import wait_until_idle

from .conftest import running_local_tally, uservisits_rows

OBJECTS, THREADS = int(os.environ.get("TALLY_LOAD_OBJECTS", 2000)), 8
JOBS = ["bdb-agg-2a", "bdb-agg-2b", "bdb-agg-2c"]


@pytest.fixture
def local_tally():
    yield from running_local_tally(workers=2, reduce_every=2.0, jobs=",".join(JOBS))


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of this process and all its descendants (moto, mapper workers), from /proc."""
    pid = pid or os.getpid()
    try:
        with open(f"/proc/{pid}/status") as status:
            kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    except (FileNotFoundError, StopIteration):
        return 0.0  # the process ended while we looked (or is a zombie without memory)
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                children += [int(child) for child in listing.read().split()]
        except FileNotFoundError:
            pass  # a thread that ended since the listing
    return kb / 1024 + sum(rss_mb(child) for child in children)


@pytest.mark.slow
def test_small_objects_from_eight_threads_are_each_counted_once(local_tally):
    s3 = local_tally.client()
    api = TallyClient(local_tally.api_url)

    def upload(i: int) -> None:
        # Each object: one row in its own group, one row in a shared group.
        body = uservisits_rows((f"10.{i // 250}.{i % 250}.1", "1.000001"), ("99.99.99.99", "2"))
        s3.put_object(Bucket="tally-input", Key=f"uservisits/load/{i:05d}.csv", Body=body.encode())

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(upload, range(200)))
        wait_until_idle(api, ["bdb-agg-2c"], timeout=300)
        warm = rss_mb()
        started = time.monotonic()
        list(pool.map(upload, range(200, OBJECTS)))
    wait_until_idle(api, JOBS, timeout=1800)  # the counts below are the test; the time is printed
    elapsed = time.monotonic() - started

    rows = {row["key"]["sourceIP_prefix"]: row["values"]["adRevenue"] for row in api.results("bdb-agg-2c")}
    assert len(rows) == OBJECTS + 1
    assert rows["99.99.99.99"] == Decimal(2 * OBJECTS)
    assert all(value == Decimal("1.000001") for key, value in rows.items() if key != "99.99.99.99")
    status = api.status("bdb-agg-2c")
    assert status["partials_pending"] == 0 and status["objects"]["merged"] == OBJECTS
    # Under load a handler may fail transiently (moto drops a connection) and be retried: that is the
    # at-least-once delivery this test is about, and the exact counts above are what must survive it.
    if local_tally.errors:
        print(f"\n{len(local_tally.errors)} handler failures retried, e.g. {local_tally.errors[0]}")
    after = rss_mb()
    print(f"\n{OBJECTS - 200} objects to idle in {elapsed:.1f} s ({(OBJECTS - 200) / elapsed:.0f} objects/s); "
          f"RSS of the service {warm:.0f} MB after warm-up, {after:.0f} MB at the end")
    assert after < warm * 1.5 + 100, f"memory grew from {warm:.0f} MB to {after:.0f} MB"
