"""What a reducer run changes, given the ledger, the inbox and what S3 says is current (pure)."""
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.engine import layout
from chalicelib.engine.changes import Current, combine_ranges, plan_changes, released


def put(key: str, etag: str, attempt: str = "a1") -> dict:
    contribution = f"{key}@{etag}"
    return {"kind": "put", "key": key, "etag": etag, "contribution": contribution,
            "id": layout.version_marker(contribution, attempt), "parts": [f"p/{contribution}/{attempt}-0"]}


def removed(key: str, marker: str = "r1") -> dict:
    return {"kind": "removed", "key": key, "contribution": marker, "id": marker}


def live(key: str, etag: str, attempt: str = "a1") -> dict:
    contribution = f"{key}@{etag}"
    return {"key": key, "etag": etag, "contribution": contribution, "parts": [f"p/{contribution}/{attempt}-0"]}


def freed(markers: list[dict], plan, ledger_after: dict) -> set[str]:
    """What the run may hand to the garbage collector: released by the plan, referenced by no live version."""
    return released(markers, plan) - {ref for entry in ledger_after.values() for ref in entry["parts"]}


def applied(ledger: dict, plan) -> dict:
    after = {key: entry for key, entry in ledger.items() if entry not in (*plan.retract, *plan.lost)}
    after.update({m["key"]: m for m in plan.add})
    return after


def test_a_new_object_version_is_added():
    plan = plan_changes({}, [put("a", "e1")], {"a": Current("e1")})
    assert [m["contribution"] for m in plan.add] == ["a@e1"] and plan.retract == ()
    assert plan.processed == ("a@e1.a1",)


def test_a_duplicate_of_the_live_version_changes_nothing_and_keeps_its_parts():
    ledger, markers = {"a": live("a", "e1")}, [put("a", "e1")]  # a run that crashed after its commit
    plan = plan_changes(ledger, markers, {"a": Current("e1")})
    assert not plan.changes_result and plan.processed == ("a@e1.a1",)
    assert freed(markers, plan, ledger) == set()


def test_another_attempt_at_the_live_version_changes_nothing_and_frees_only_its_own_parts():
    ledger, markers = {"a": live("a", "e1", "a1")}, [put("a", "e1", "a2")]  # a duplicated delivery
    plan = plan_changes(ledger, markers, {"a": Current("e1")})
    assert not plan.changes_result and plan.processed == ("a@e1.a2",)
    assert freed(markers, plan, ledger) == {"p/a@e1/a2-0"}


def test_two_attempts_at_a_new_version_in_one_run_make_one_live_and_free_the_other():
    ledger, markers = {}, [put("a", "e1", "a1"), put("a", "e1", "a2")]
    plan = plan_changes(ledger, markers, {"a": Current("e1")})
    assert [m["id"] for m in plan.add] == ["a@e1.a1"] and set(plan.processed) == {"a@e1.a1", "a@e1.a2"}
    assert freed(markers, plan, applied(ledger, plan)) == {"p/a@e1/a2-0"}


def test_an_overwrite_replaces_the_old_version_and_frees_its_parts():
    ledger, markers = {"a": live("a", "e1")}, [put("a", "e2")]
    plan = plan_changes(ledger, markers, {"a": Current("e2")})
    assert [m["contribution"] for m in plan.add] == ["a@e2"]
    assert [e["contribution"] for e in plan.retract] == ["a@e1"]
    assert freed(markers, plan, applied(ledger, plan)) == {"p/a@e1/a1-0"}


def test_an_old_version_arriving_after_a_newer_one_does_not_win():
    ledger, markers = {"a": live("a", "e2")}, [put("a", "e1")]
    plan = plan_changes(ledger, markers, {"a": Current("e2")})
    assert not plan.changes_result and freed(markers, plan, ledger) == {"p/a@e1/a1-0"}


def test_both_versions_in_one_run_in_either_order_keep_the_current_one():
    for markers in ([put("a", "e1"), put("a", "e2")], [put("a", "e2"), put("a", "e1")]):
        plan = plan_changes({}, markers, {"a": Current("e2")})
        assert [m["contribution"] for m in plan.add] == ["a@e2"]
        assert freed(markers, plan, applied({}, plan)) == {"p/a@e1/a1-0"}


def test_a_removed_object_is_retracted_even_if_its_put_marker_comes_later():
    plan = plan_changes({"a": live("a", "e1")}, [removed("a")], {"a": None})
    assert [e["contribution"] for e in plan.retract] == ["a@e1"] and plan.add == ()
    markers = [removed("a"), put("a", "e1")]
    plan = plan_changes({}, markers, {"a": None})
    assert not plan.changes_result and freed(markers, plan, {}) == {"p/a@e1/a1-0"}


def test_a_removal_followed_by_a_new_upload_keeps_the_new_version():
    plan = plan_changes({"a": live("a", "e1")}, [removed("a"), put("a", "e2")], {"a": Current("e2")})
    assert [m["contribution"] for m in plan.add] == ["a@e2"]
    assert [e["contribution"] for e in plan.retract] == ["a@e1"]


def test_a_current_version_without_its_marker_yet_waits_and_keeps_the_live_one():
    ledger, markers = {"a": live("a", "e1")}, [put("a", "e0")]
    plan = plan_changes(ledger, markers, {"a": Current("e3")})
    assert not plan.changes_result and plan.waiting == ("a",) and freed(markers, plan, ledger) == {"p/a@e0/a1-0"}


def test_versions_are_told_apart_by_etag_in_a_versioned_bucket_too():
    # The reconcile's listing has no version ids: a marker and a ledger entry name a version by its ETag, so the
    # same bytes uploaded again are the live contribution already, whatever their version id.
    marker = {**put("a", "same"), "version_id": "v2"}
    old = {**live("a", "same"), "version_id": "v1"}
    plan = plan_changes({"a": old}, [marker], {"a": Current("same", "v2")})
    assert not plan.changes_result
    plan = plan_changes({"a": old}, [{**put("a", "other"), "version_id": "v3"}], {"a": Current("other", "v3")})
    assert [m["version_id"] for m in plan.add] == ["v3"] and plan.retract == (old,)


def test_a_repair_drops_lost_versions_without_retracting_them_and_lets_the_same_run_add_them_again():
    ledger = {"a": live("a", "e1"), "b": live("b", "e1")}
    repair = {"kind": "repair", "lost": ["a@e1"], "id": "repair.t1"}
    markers = [repair, put("a", "e1", "a2")]  # the reconcile mapped the key's current version again
    plan = plan_changes(ledger, markers, {"a": Current("e1")})
    assert plan.rebuilds and [e["contribution"] for e in plan.lost] == ["a@e1"] and plan.retract == ()
    assert [m["id"] for m in plan.add] == ["a@e1.a2"] and set(plan.processed) == {"repair.t1", "a@e1.a2"}
    assert freed(markers, plan, applied(ledger, plan)) == {"p/a@e1/a1-0"}


# -- large objects: range markers are applied once all of a version's ranges are in ---------------------------

def ranged(key: str, etag: str, index: int, count: int, attempt: str = "a1") -> dict:
    contribution = f"{key}@{etag}"
    return {"kind": "put", "key": key, "etag": etag, "contribution": contribution, "range": [index, count],
            "rows": 10 + index, "bad_rows": index % 2, "mapped_at": f"2026-01-01T00:00:0{index}",
            "id": layout.range_marker(contribution, index, count, attempt),
            "parts": [f"p/{contribution}/{attempt}r{index}"]}


def reduce_run(ledger: dict, inbox: dict, current: dict, quarantined=frozenset()):
    """One reducer run over an inbox of marker id -> marker: the plan, applied to the ledger and the inbox, and
    the parts it frees."""
    read = list(inbox.values())
    markers, incomplete = combine_ranges(read)
    plan = plan_changes(ledger, markers, current, incomplete, quarantined)
    for entry in plan.retract:
        ledger.pop(entry["key"])
    ledger.update({m["key"]: m for m in plan.add})
    for marker in plan.processed:
        inbox.pop(marker)
    return plan, freed(read, plan, ledger)


def test_a_complete_set_is_one_marker_of_the_whole_version_with_its_parts_in_range_order():
    [whole], incomplete = combine_ranges([ranged("a", "e1", i, 3) for i in (2, 0, 1)] + [ranged("a", "e1", 2, 3, "a2")])
    assert incomplete == []
    assert whole["parts"] == ["p/a@e1/a1r0", "p/a@e1/a1r1", "p/a@e1/a1r2"] and "range" not in whole
    assert (whole["rows"], whole["bad_rows"], whole["mapped_at"]) == (33, 1, "2026-01-01T00:00:02")
    # Range 2 came twice: one attempt's marker is taken, and the set stands for both.
    assert whole["markers"] == sorted([layout.range_marker("a@e1", i, 3, "a1") for i in range(3)]
                                      + [layout.range_marker("a@e1", 2, 3, "a2")])


@given(count=st.integers(1, 6), data=st.data())
def test_ranges_arriving_in_any_order_over_several_runs_and_twice_are_applied_once(count, data):
    arrivals = [(index, "a1") for index in data.draw(st.permutations(range(count)))]
    arrivals += [(index, f"late{n}") for n, index in enumerate(  # late duplicates: other attempts
        data.draw(st.lists(st.sampled_from(range(count)), max_size=4)))]
    runs_after = data.draw(st.sets(st.integers(0, len(arrivals) - 1)))
    ledger, inbox, added, freed_parts = {}, {}, 0, set()
    for position, (index, attempt) in enumerate(arrivals):
        marker = ranged("a", "e1", index, count, attempt)
        inbox[marker["id"]] = marker
        if position in runs_after:
            plan, released_now = reduce_run(ledger, inbox, {"a": Current("e1")})
            added += len(plan.add)
            freed_parts |= released_now
            assert bool(ledger) == (len({i for i, _ in arrivals[:position + 1]}) == count)
    plan, released_now = reduce_run(ledger, inbox, {"a": Current("e1")})
    added += len(plan.add)
    freed_parts |= released_now

    assert added == 1 and inbox == {}
    assert ledger["a"]["parts"] == [f"p/a@e1/a1r{i}" for i in range(count)]
    assert not freed_parts & set(ledger["a"]["parts"])  # never the parts of the version made live
    assert freed_parts == {f"p/a@e1/late{n}r{i}" for n, (i, _) in enumerate(arrivals[count:])}


def test_an_incomplete_set_of_the_current_version_waits_in_the_inbox():
    inbox = {m["id"]: m for m in [ranged("a", "e1", 0, 3)]}
    plan, freed_parts = reduce_run({}, inbox, {"a": Current("e1")})
    assert plan.processed == () and plan.add == () and freed_parts == set()
    assert plan.waiting == ("a",) and len(inbox) == 1


def test_an_incomplete_set_of_a_version_no_longer_current_is_dropped_with_its_parts():
    for now in (Current("e2"), None):  # overwritten, or deleted
        inbox = {m["id"]: m for m in [ranged("a", "e1", i, 3) for i in (0, 2)]}
        plan, freed_parts = reduce_run({}, inbox, {"a": now})
        assert inbox == {} and freed_parts == {"p/a@e1/a1r0", "p/a@e1/a1r2"} and plan.add == ()


def test_an_overwrite_between_ranges_ends_with_the_new_version_only():
    inbox = {m["id"]: m for m in [ranged("a", "e1", 0, 2), *(ranged("a", "e2", i, 2) for i in range(2))]}
    ledger = {}
    plan, freed_parts = reduce_run(ledger, inbox, {"a": Current("e2")})
    assert [m["contribution"] for m in plan.add] == ["a@e2"] and freed_parts == {"p/a@e1/a1r0"}
    assert inbox == {} and ledger["a"]["etag"] == "e2"


def test_a_quarantined_versions_other_ranges_are_dropped():
    inbox = {m["id"]: m for m in [ranged("a", "e1", 1, 2)]}
    plan, freed_parts = reduce_run({}, inbox, {"a": Current("e1")}, quarantined=frozenset({"a@e1"}))
    assert inbox == {} and freed_parts == {"p/a@e1/a1r1"}


def test_a_repeat_of_a_live_versions_ranges_is_processed_and_frees_only_its_own_parts():
    ledger = {"a": live("a", "e1")}
    inbox = {m["id"]: m for m in [ranged("a", "e1", 0, 2, "a9")]}  # re-fanned out; one range so far
    plan, freed_parts = reduce_run(ledger, inbox, {"a": Current("e1")})
    assert inbox == {} and not plan.changes_result
    assert freed_parts == {"p/a@e1/a9r0"} and ledger["a"]["parts"] == ["p/a@e1/a1-0"]
