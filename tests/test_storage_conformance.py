"""What Tally relies on of S3, through S3ObjectStore, on moto and on SeaweedFS alike; and, at the boto3 level,
where the two answer differently (the README's table lists the same).

moto runs as its server here (not the in-process mock), so that the races go over HTTP as they would on S3.
"""
from __future__ import annotations

import hashlib
import io
import threading
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError

from chalicelib.errors import CommitConflict, ObjectMissing
from chalicelib.storage import S3ObjectStore

BACKENDS = ["moto", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def client(backend, request):
    return request.getfixturevalue("s3_server" if backend == "moto" else "seaweed_s3")


@pytest.fixture
def store(client) -> S3ObjectStore:
    """A new bucket per test: SeaweedFS's server lives for the session."""
    bucket = f"conformance-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3ObjectStore(bucket, client)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_put_returns_the_md5_etag_and_get_and_head_see_it(store):
    for key, data in [("uservisits/b c.csv", b"1.1.1.1,x\n"), ("uservisits/ü.csv.gz", b""), ("a+b", b"\x00\xff")]:
        etag = store.put(key, data)
        assert etag == md5(data)
        assert store.get(key) == (data, etag)
        head = store.head(key)
        assert (head.key, head.etag, head.size, head.version_id) == (key, etag, len(data), None)


def test_a_multipart_upload_lists_heads_and_reads_under_one_etag(store, client, tmp_path):
    """Listing mode and the reconcile take the ETag from LIST and read with If-Match on it, range by range."""
    from boto3.s3.transfer import TransferConfig

    data = bytes(range(256)) * (24 << 10)  # 6 MiB: two parts of the 5 MiB minimum
    client.upload_fileobj(io.BytesIO(data), store.bucket, "uservisits/big.csv",
                          Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
    [listed] = store.list("uservisits/")
    assert listed.etag.endswith("-2") and listed.size == len(data)
    assert store.head("uservisits/big.csv").etag == listed.etag
    opened = store.open("uservisits/big.csv", if_match=listed.etag, byte_range=((5 << 20) - 10, (5 << 20) + 10))
    with opened.body as body:
        assert body.read() == data[(5 << 20) - 10:(5 << 20) + 10]


def test_head_of_a_missing_key_is_none_and_get_is_object_missing(store):
    assert store.head("nothing/here") is None
    with pytest.raises(ObjectMissing):
        store.get("nothing/here")


def test_put_if_absent_twice_the_second_is_a_conflict_and_the_first_stays(store):
    first = store.put_if_absent("jobs/j/manifest.json", b"first")
    with pytest.raises(CommitConflict):
        store.put_if_absent("jobs/j/manifest.json", b"second")
    assert store.get("jobs/j/manifest.json") == (b"first", first)


def test_put_if_match_commits_on_the_current_etag_and_conflicts_on_a_stale_one(store):
    stale = store.put("jobs/j/manifest.json", b"v1")
    current = store.put("jobs/j/manifest.json", b"v2")
    with pytest.raises(CommitConflict):
        store.put_if_match("jobs/j/manifest.json", b"lost race", stale)
    committed = store.put_if_match("jobs/j/manifest.json", b"v3", current)
    assert store.get("jobs/j/manifest.json") == (b"v3", committed)


def test_put_if_match_on_a_missing_key_fails_and_writes_nothing(store, backend):
    """AWS and moto answer 404 (ObjectMissing), SeaweedFS 412 (CommitConflict). The one caller, the reducer's
    manifest commit, always has a manifest it read (none: put_if_absent), and no Tally code deletes a manifest;
    either error fails the commit, which is all it needs."""
    with pytest.raises((ObjectMissing, CommitConflict)) as raised:
        store.put_if_match("jobs/j/manifest.json", b"v1", md5(b"v0"))
    assert raised.type is {"moto": ObjectMissing, "seaweedfs": CommitConflict}[backend]
    assert store.head("jobs/j/manifest.json") is None


def test_a_presigned_url_reads_the_object_with_a_plain_get_and_no_credentials(store):
    """Exports are handed out so (engine/export.py): SigV4 query signing, a lifetime, a download name."""
    store.put("exports/j/000000000001-f.csv", b"a,b\n1,2\n", "text/csv")
    url = store.presigned_get("exports/j/000000000001-f.csv", timedelta(minutes=5), "j-1.csv")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=300" in url
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"a,b\n1,2\n"
        assert response.headers["Content-Disposition"] == 'attachment; filename="j-1.csv"'


def test_ranged_get_reads_exactly_the_range(store):
    data = bytes(range(256)) * 4
    etag = store.put("big.csv", data)
    opened = store.open("big.csv", byte_range=(10, 300))
    with opened.body as body:
        assert body.read() == data[10:300]
    assert (opened.etag, opened.size) == (etag, 290)
    opened = store.open("big.csv", if_match=etag, byte_range=(1000, len(data)))  # the mapper's last range
    with opened.body as body:
        assert body.read() == data[1000:]


def test_get_range_and_get_tail_read_a_runs_blocks_and_its_index(store):
    """A result run is read block by block: its index from a suffix range, then the blocks it names."""
    data = bytes(range(256)) * 4
    store.put("run.arrow", data)
    assert store.get_range("run.arrow", 10, 300) == data[10:300]
    assert store.get_tail("run.arrow", 100) == (data[-100:], len(data))
    assert store.get_tail("run.arrow", 5000) == (data, len(data))  # longer than the object: all of it
    with pytest.raises(ObjectMissing):
        store.get_tail("gone.arrow", 100)


def test_get_if_match_on_a_replaced_object_is_a_conflict_and_on_a_deleted_one_missing(store):
    """The mapper reads the version its event names: either error makes it "superseded"."""
    old = store.put("uservisits/a.csv", b"old")
    new = store.put("uservisits/a.csv", b"new")
    with pytest.raises(CommitConflict):
        store.open("uservisits/a.csv", if_match=old)
    with pytest.raises(CommitConflict):
        store.open("uservisits/a.csv", if_match=old, byte_range=(0, 2))
    with store.open("uservisits/a.csv", if_match=new).body as body:
        assert body.read() == b"new"
    store.delete(["uservisits/a.csv"])
    with pytest.raises(ObjectMissing):
        store.open("uservisits/a.csv", if_match=new)


def test_list_is_ordered_after_start_after_in_pages_and_a_prefix_may_cut_a_name(store):
    keys = ["jobs/j/inbox/0001", "jobs/j/inbox/0002", "jobs/j/inbox/0002a", "jobs/j/inbox/0003/x",
            "jobs/j/inbox/0010", "jobs/j/inbox/b c", "jobs/j/inbox/ü", "jobs/j/parts/0001", "jobs/k/inbox/0001"]
    etags = {key: store.put(key, key.encode()) for key in reversed(keys)}
    inbox = [key for key in keys if key.startswith("jobs/j/inbox/")]

    listed = list(store.list("jobs/j/inbox/", page_size=2))
    assert [o.key for o in listed] == inbox
    assert all((o.etag, o.size) == (etags[o.key], len(o.key.encode())) for o in listed)
    assert [o.key for o in store.list("jobs/j/inbox/", start_after="jobs/j/inbox/0002", page_size=2)] == inbox[2:]
    assert [o.key for o in store.list("jobs/j/inbox/", start_after="jobs/j/inbox/0002a", page_size=1)] == inbox[3:]
    assert [o.key for o in store.list("jobs/j/inbox/000")] == inbox[:4]  # not at a "/"
    assert [o.key for o in store.list("jobs/j/inbox/0003")] == ["jobs/j/inbox/0003/x"]
    assert list(store.list("jobs/j/inbox/0004")) == []


def test_one_page_says_whether_more_keys_follow(store):
    keys = [f"jobs/j/inbox/{i:04d}" for i in range(5)]
    etags = {key: store.put(key, b"m") for key in keys}
    store.put("jobs/k/inbox/0000", b"m")

    first = store.list_page("jobs/j/inbox/", max_keys=3)
    assert [(o.key, o.etag) for o in first.objects] == [(key, etags[key]) for key in keys[:3]]
    assert first.truncated and all(o.last_modified is not None for o in first.objects)
    assert store.list_page("jobs/j/inbox/", max_keys=5).truncated is False
    assert store.list_page("jobs/x/") == store.list_page("jobs/x/", max_keys=1) and not store.list_page("jobs/x/").objects


def test_delete_removes_many_keys_in_chunks_and_leaves_no_empty_folder_listed(store):
    keys = [f"jobs/j/inbox/{i:05d}/m" for i in range(1005)]  # more than one DeleteObjects call
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.put(key, b"m"), keys))
    store.put("jobs/j/ledger", b"l")

    store.delete(keys + ["jobs/j/inbox/never-there"])

    assert list(store.list("jobs/j/inbox/")) == []
    assert [o.key for o in store.list("jobs/j/")] == ["jobs/j/ledger"]


@pytest.mark.parametrize("condition", ["put_if_absent", "put_if_match"])
def test_of_racing_conditional_puts_exactly_one_wins(store, condition):
    """Overlapping reducers commit the manifest so: one must win each round, and the stored bytes are its."""
    for round_ in range(3):
        key, etag = f"jobs/j/manifest-{round_}.json", None
        if condition == "put_if_match":
            etag = store.put(key, b"base")
        barrier = threading.Barrier(8)

        def commit(writer: int) -> str | None:
            data = f"writer {writer}".encode()
            barrier.wait()
            try:
                if condition == "put_if_absent":
                    store.put_if_absent(key, data)
                else:
                    store.put_if_match(key, data, etag)
            except CommitConflict:
                return None
            return data.decode()

        with ThreadPoolExecutor(8) as pool:
            winners = [w for w in pool.map(commit, range(8)) if w is not None]
        assert len(winners) == 1, (round_, winners)
        assert store.get(key)[0] == winners[0].encode()


# -- where the two differ, at the boto3 level: Tally never sends these, the README records them ---------------

def status_of(call) -> int:
    try:
        return call()["ResponseMetadata"]["HTTPStatusCode"]
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def test_the_answers_that_differ_from_backend_to_backend(client, store, backend):
    bucket = store.bucket
    client.put_object(Bucket=bucket, Key="existing", Body=b"x")
    answers = {
        "PutObject If-Match on a missing key": status_of(
            lambda: client.put_object(Bucket=bucket, Key="missing", Body=b"y", IfMatch=f'"{md5(b"x")}"')),
        "PutObject If-Match: * on an existing key": status_of(
            lambda: client.put_object(Bucket=bucket, Key="existing", Body=b"y", IfMatch="*")),
        "CreateBucket of a bucket one owns": status_of(lambda: client.create_bucket(Bucket=bucket)),
        "PutBucketNotificationConfiguration": status_of(lambda: client.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [{
                "QueueArn": "arn:aws:sqs:us-east-1:123456789012:tally-events", "Events": ["s3:ObjectCreated:*"]}]})),
    }
    # AWS (us-east-1), by its documentation: 404; not documented (it expects an ETag); 200; 200 if the queue exists.
    assert answers == {
        "moto": {"PutObject If-Match on a missing key": 404, "PutObject If-Match: * on an existing key": 412,
                 "CreateBucket of a bucket one owns": 200, "PutBucketNotificationConfiguration": 200},
        # No notifications: the PUT ?notification request is taken for CreateBucket.
        "seaweedfs": {"PutObject If-Match on a missing key": 412, "PutObject If-Match: * on an existing key": 200,
                      "CreateBucket of a bucket one owns": 409, "PutBucketNotificationConfiguration": 409},
    }[backend]


@pytest.mark.seaweedfs
def test_seaweedfs_takes_only_its_static_key(seaweedfs, seaweed_s3):
    import boto3
    from botocore.config import Config

    stranger = boto3.client("s3", endpoint_url=seaweedfs.endpoint, region_name="us-east-1",
                            aws_access_key_id="someone-else", aws_secret_access_key="wrong",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    assert status_of(stranger.list_buckets) == 403
    assert status_of(seaweed_s3.list_buckets) == 200
