"""What a reducer run changes, given the ledger, the inbox and what S3 says is current (pure)."""
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.engine import layout
from chalicelib.engine.changes import Current, combine_ranges, plan_changes


def put(key: str, etag: str) -> dict:
    return {"kind": "put", "key": key, "etag": etag, "contribution": f"{key}@{etag}", "parts": [f"p/{key}@{etag}"]}


def removed(key: str, marker: str = "r1") -> dict:
    return {"kind": "removed", "key": key, "contribution": marker}


def live(key: str, etag: str) -> dict:
    return {"key": key, "etag": etag, "contribution": f"{key}@{etag}", "parts": [f"p/{key}@{etag}"]}


def test_a_new_object_version_is_added():
    plan = plan_changes({}, [put("a", "e1")], {"a": Current("e1")})
    assert [m["contribution"] for m in plan.add] == ["a@e1"] and plan.retract == ()
    assert plan.processed == ("a@e1",)


def test_a_duplicate_of_the_live_version_changes_nothing_and_keeps_its_parts():
    plan = plan_changes({"a": live("a", "e1")}, [put("a", "e1")], {"a": Current("e1")})
    assert not plan.changes_result and plan.stale_contributions == () and plan.processed == ("a@e1",)


def test_an_overwrite_replaces_the_old_version_and_frees_its_parts():
    plan = plan_changes({"a": live("a", "e1")}, [put("a", "e2")], {"a": Current("e2")})
    assert [m["contribution"] for m in plan.add] == ["a@e2"]
    assert [e["contribution"] for e in plan.retract] == ["a@e1"]
    assert plan.stale_contributions == ("a@e1",)


def test_an_old_version_arriving_after_a_newer_one_does_not_win():
    plan = plan_changes({"a": live("a", "e2")}, [put("a", "e1")], {"a": Current("e2")})
    assert not plan.changes_result and plan.stale_contributions == ("a@e1",)


def test_both_versions_in_one_run_in_either_order_keep_the_current_one():
    for markers in ([put("a", "e1"), put("a", "e2")], [put("a", "e2"), put("a", "e1")]):
        plan = plan_changes({}, markers, {"a": Current("e2")})
        assert [m["contribution"] for m in plan.add] == ["a@e2"] and plan.stale_contributions == ("a@e1",)


def test_a_removed_object_is_retracted_even_if_its_put_marker_comes_later():
    plan = plan_changes({"a": live("a", "e1")}, [removed("a")], {"a": None})
    assert [e["contribution"] for e in plan.retract] == ["a@e1"] and plan.add == ()
    plan = plan_changes({}, [removed("a"), put("a", "e1")], {"a": None})
    assert not plan.changes_result and plan.stale_contributions == ("a@e1",)


def test_a_removal_followed_by_a_new_upload_keeps_the_new_version():
    plan = plan_changes({"a": live("a", "e1")}, [removed("a"), put("a", "e2")], {"a": Current("e2")})
    assert [m["contribution"] for m in plan.add] == ["a@e2"]
    assert [e["contribution"] for e in plan.retract] == ["a@e1"]


def test_a_current_version_without_its_marker_yet_waits_and_keeps_the_live_one():
    plan = plan_changes({"a": live("a", "e1")}, [put("a", "e0")], {"a": Current("e3")})
    assert not plan.changes_result and plan.waiting == ("a",) and plan.stale_contributions == ("a@e0",)


def test_version_ids_decide_when_the_bucket_is_versioned():
    # Same bytes uploaded twice: same ETag, two versions. The version id says which one is current.
    marker = {**put("a", "same"), "version_id": "v2", "contribution": "a@v2"}
    old = {**live("a", "same"), "version_id": "v1", "contribution": "a@v1"}
    plan = plan_changes({"a": old}, [marker], {"a": Current("same", "v2")})
    assert plan.add == (marker,) and plan.retract == (old,)
    plan = plan_changes({"a": old}, [marker], {"a": Current("same", "v1")})
    assert not plan.changes_result and plan.stale_contributions == ("a@v2",)


# -- large objects: range markers are applied once all of a version's ranges are in ---------------------------

def ranged(key: str, etag: str, index: int, count: int) -> dict:
    contribution = f"{key}@{etag}"
    return {"kind": "put", "key": key, "etag": etag, "contribution": contribution, "range": [index, count],
            "rows": 10 + index, "bad_rows": index % 2, "mapped_at": f"2026-01-01T00:00:0{index}",
            "parts": [f"p/{contribution}/r{index}"]}


def reduce_run(ledger: dict, inbox: dict, current: dict, quarantined=frozenset()):
    """One reducer run over an inbox of marker id -> marker: the plan, applied to the ledger and the inbox."""
    markers, incomplete = combine_ranges(inbox.values())
    plan = plan_changes(ledger, markers, current, incomplete, quarantined)
    for entry in plan.retract:
        ledger.pop(entry["key"])
    ledger.update({m["key"]: m for m in plan.add})
    for marker in plan.processed:
        inbox.pop(marker)
    return plan


def test_a_complete_set_is_one_marker_of_the_whole_version_with_its_parts_in_range_order():
    [whole], incomplete = combine_ranges([ranged("a", "e1", i, 3) for i in (2, 0, 1, 2)])
    assert incomplete == []
    assert whole["parts"] == ["p/a@e1/r0", "p/a@e1/r1", "p/a@e1/r2"] and "range" not in whole
    assert (whole["rows"], whole["bad_rows"], whole["mapped_at"]) == (33, 1, "2026-01-01T00:00:02")
    assert whole["markers"] == [layout.range_marker("a@e1", i, 3) for i in range(3)]


@given(count=st.integers(1, 6), data=st.data())
def test_ranges_arriving_in_any_order_over_several_runs_and_twice_are_applied_once(count, data):
    arrivals = data.draw(st.permutations(range(count)))
    arrivals += data.draw(st.lists(st.sampled_from(range(count)), max_size=4))  # late duplicates
    runs_after = data.draw(st.sets(st.integers(0, len(arrivals) - 1)))
    ledger, inbox, added = {}, {}, 0
    for position, index in enumerate(arrivals):
        marker = ranged("a", "e1", index, count)
        inbox[layout.range_marker("a@e1", index, count)] = marker
        if position in runs_after:
            plan = reduce_run(ledger, inbox, {"a": Current("e1")})
            added += len(plan.add)
            assert plan.stale_contributions == ()  # never the parts of the version being assembled
            assert bool(ledger) == (len(set(arrivals[:position + 1])) == count)
    added += len(reduce_run(ledger, inbox, {"a": Current("e1")}).add)

    assert added == 1 and inbox == {}
    assert ledger["a"]["parts"] == [f"p/a@e1/r{i}" for i in range(count)]


def test_an_incomplete_set_of_the_current_version_waits_in_the_inbox():
    inbox = {layout.range_marker("a@e1", 0, 3): ranged("a", "e1", 0, 3)}
    plan = reduce_run({}, inbox, {"a": Current("e1")})
    assert plan.processed == () and plan.add == () and plan.stale_contributions == ()
    assert plan.waiting == ("a",) and len(inbox) == 1


def test_an_incomplete_set_of_a_version_no_longer_current_is_dropped_with_its_parts():
    for now in (Current("e2"), None):  # overwritten, or deleted
        inbox = {layout.range_marker("a@e1", i, 3): ranged("a", "e1", i, 3) for i in (0, 2)}
        plan = reduce_run({}, inbox, {"a": now})
        assert inbox == {} and plan.stale_contributions == ("a@e1",) and plan.add == ()


def test_an_overwrite_between_ranges_ends_with_the_new_version_only():
    inbox = {layout.range_marker("a@e1", 0, 2): ranged("a", "e1", 0, 2)}
    inbox.update({layout.range_marker("a@e2", i, 2): ranged("a", "e2", i, 2) for i in range(2)})
    ledger = {}
    plan = reduce_run(ledger, inbox, {"a": Current("e2")})
    assert [m["contribution"] for m in plan.add] == ["a@e2"] and plan.stale_contributions == ("a@e1",)
    assert inbox == {} and ledger["a"]["etag"] == "e2"


def test_a_quarantined_versions_other_ranges_are_dropped():
    inbox = {layout.range_marker("a@e1", 1, 2): ranged("a", "e1", 1, 2)}
    plan = reduce_run({}, inbox, {"a": Current("e1")}, quarantined=frozenset({"a@e1"}))
    assert inbox == {} and plan.stale_contributions == ("a@e1",)


def test_a_repeat_of_a_live_versions_ranges_is_processed_but_its_parts_are_kept():
    ledger = {"a": live("a", "e1")}
    inbox = {layout.range_marker("a@e1", 0, 2): ranged("a", "e1", 0, 2)}  # re-fanned out; one range so far
    plan = reduce_run(ledger, inbox, {"a": Current("e1")})
    assert inbox == {} and plan.stale_contributions == () and not plan.changes_result
