"""What a reducer run changes, given the ledger, the inbox and what S3 says is current (pure)."""
from chalicelib.engine.changes import Current, plan_changes


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
