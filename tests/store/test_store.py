"""ObjectStore against a real SeaweedFS: objects, metadata, streaming, presigning, compare-and-swap."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
import tracemalloc
import urllib.request
from datetime import timedelta

import pytest

from libs.store.client import (
    STREAM_PART_SIZE,
    AlreadyExists,
    NotFound,
    ObjectStore,
    PreconditionFailed,
    StoreError,
)
from libs.store.settings import StoreSettings


class _UnsizedReader(io.RawIOBase):
    """A non-seekable stream of ``total`` pseudo-random bytes, like an HTTP upload body."""

    def __init__(self, total: int, seed: bytes = b"talkserve") -> None:
        self.remaining = total
        self.digest = hashlib.sha256()
        self._block = hashlib.sha512(seed).digest() * 1024  # 64 KiB pattern
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self.remaining, 65536)
        if n <= 0:
            return 0
        start = self._offset % len(self._block)
        chunk = (self._block[start:] + self._block)[:n]
        # Vary the pattern so identical parts cannot hide a part-ordering bug.
        chunk = bytes([(self._offset // 65536) & 0xFF]) + chunk[1:]
        buffer[:n] = chunk
        self.digest.update(chunk)
        self._offset += n
        self.remaining -= n
        return n


def test_bytes_roundtrip_with_metadata(store: ObjectStore) -> None:
    data = b"hello talkserve"
    etag = store.put_bytes(
        "a/hello.txt", data, content_type="text/plain", metadata={"Task-Id": "abc", "kind": "x"}
    )
    assert etag == hashlib.md5(data).hexdigest()
    assert store.get_bytes("a/hello.txt") == data
    info = store.stat("a/hello.txt")
    assert info.size == len(data)
    assert info.etag == etag
    assert info.content_type == "text/plain"
    # Keys come back lower-case without the x-amz-meta- prefix.
    assert info.metadata == {"task-id": "abc", "kind": "x"}
    assert info.last_modified is not None
    assert store.exists("a/hello.txt")


def test_file_roundtrip(store: ObjectStore, tmp_path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(bytes(range(256)) * 4000)
    store.put_file("files/in.bin", src, content_type="application/octet-stream", metadata={"n": "1"})
    dst = tmp_path / "sub" / "out.bin"
    info = store.get_file("files/in.bin", dst)
    assert dst.read_bytes() == src.read_bytes()
    assert info.size == src.stat().st_size
    head = store.stat("files/in.bin")
    assert head.metadata == {"n": "1"}
    # one GET tells what a HEAD would
    assert (info.etag, info.content_type, info.metadata, info.last_modified) == \
        (head.etag, head.content_type, head.metadata, head.last_modified)
    assert [p.name for p in dst.parent.iterdir()] == ["out.bin"]  # no partial file left


def test_missing_objects(store: ObjectStore, tmp_path) -> None:
    with pytest.raises(NotFound):
        store.stat("nope")
    with pytest.raises(NotFound):
        store.get_bytes("nope")
    with pytest.raises(NotFound):
        store.iter_object("nope")
    with pytest.raises(NotFound):
        store.get_file("nope", tmp_path / "x")
    with pytest.raises(NotFound):
        store.read_json("nope.json")
    assert not store.exists("nope")
    store.delete("nope")  # deleting what is not there is fine


def test_list_and_delete(store: ObjectStore) -> None:
    for key in ("tasks/1.json", "tasks/1/inputs/a.wav", "tasks/1/outputs/v.mp4", "tasks/2.json", "other/x"):
        store.put_bytes(key, key.encode())
    assert sorted(store.list_keys("tasks/")) == [
        "tasks/1.json",
        "tasks/1/inputs/a.wav",
        "tasks/1/outputs/v.mp4",
        "tasks/2.json",
    ]
    assert sorted(store.list_keys("tasks/", recursive=False)) == ["tasks/1.json", "tasks/2.json"]
    assert store.delete_prefix("tasks/1/") == 2
    assert sorted(store.list_keys("tasks/")) == ["tasks/1.json", "tasks/2.json"]
    store.delete("tasks/2.json")
    assert store.list_keys("tasks/") == ["tasks/1.json"]
    assert store.delete_prefix("nothing-here/") == 0


def test_presigned_get(store: ObjectStore) -> None:
    data = b"\x00\x01video-bytes" * 1000
    store.put_bytes("out/result.mp4", data, content_type="video/mp4")
    url = store.presign_get(
        "out/result.mp4",
        timedelta(minutes=5),
        response_headers={"response-content-disposition": 'attachment; filename="r.mp4"'},
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == data
        assert response.headers["Content-Disposition"] == 'attachment; filename="r.mp4"'
    # Without the signature the object is not public.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url.split("?")[0], timeout=10)
    assert err.value.code == 403


def test_iter_object_streams_and_releases(store: ObjectStore) -> None:
    data = bytes(range(256)) * (3 * 4096 + 10)  # a bit over 3 MiB
    store.put_bytes("big.bin", data)
    stream = store.iter_object("big.bin", chunk=1 << 20)
    assert stream.size == len(data)
    chunks = list(stream)
    assert b"".join(chunks) == data
    assert len(chunks) >= 4 and max(len(c) for c in chunks) <= 1 << 20
    # A byte range, as an HTTP Range request would ask.
    assert b"".join(store.iter_object("big.bin", offset=1000, length=5000)) == data[1000:6000]
    # Abandoning streams part-way must not exhaust the connection pool.
    for _ in range(40):
        with store.iter_object("big.bin", chunk=65536) as partial:
            next(iter(partial))
    assert store.get_bytes("big.bin") == data


def test_put_stream_unknown_length_is_multipart_and_bounded(store: ObjectStore) -> None:
    total = 20 * 1024 * 1024 + 12345
    reader = _UnsizedReader(total)
    tracemalloc.start()
    try:
        etag = store.put_stream("up/stream.bin", reader, length=-1, content_type="audio/wav")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One part is buffered at a time (plus the copy being sent): the memory held is
    # set by the part size, not by the 20 MB body.
    assert peak < 2.5 * STREAM_PART_SIZE < total
    parts = -(-total // STREAM_PART_SIZE)
    assert etag.endswith(f"-{parts}")  # S3's multipart ETag: md5 of md5s, then the part count
    info = store.stat("up/stream.bin")
    assert info.size == total
    assert info.content_type == "audio/wav"
    got = hashlib.sha256()
    for chunk in store.iter_object("up/stream.bin"):
        got.update(chunk)
    assert got.hexdigest() == reader.digest.hexdigest()


def test_put_stream_edge_sizes(store: ObjectStore, tmp_path) -> None:
    data = b"x" * 100_000
    store.put_stream("up/small.bin", io.BytesIO(data), length=len(data))
    assert store.get_bytes("up/small.bin") == data
    store.put_stream("up/empty.bin", io.BytesIO(b""))
    assert store.get_bytes("up/empty.bin") == b"" and store.stat("up/empty.bin").size == 0
    # Exactly one part of unknown length: a one-part multipart upload.
    exact = bytes(range(256)) * (STREAM_PART_SIZE // 256)
    store.put_stream("up/exact.bin", io.BytesIO(exact))
    assert store.get_bytes("up/exact.bin") == exact
    # A stream shorter than promised fails and leaves nothing behind.
    with pytest.raises(StoreError):
        store.put_stream("up/short.bin", io.BytesIO(exact), length=len(exact) + STREAM_PART_SIZE)
    assert not store.exists("up/short.bin")
    # put_file of a multi-part file.
    big = tmp_path / "big.bin"
    big.write_bytes(exact * 2 + b"tail")
    store.put_file("up/big.bin", big)
    assert store.get_bytes("up/big.bin") == big.read_bytes()


def test_metadata_must_be_plain_ascii(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        store.put_bytes("m", b"1", metadata={"name": "视频.mp4"})
    with pytest.raises(ValueError):
        store.put_bytes("m", b"1", metadata={"bad key": "v"})


def test_create_json_only_once(store: ObjectStore) -> None:
    etag = store.create_json("rec/a.json", {"n": 1}, {"status": "PENDING"})
    with pytest.raises(AlreadyExists):
        store.create_json("rec/a.json", {"n": 2}, {"status": "PENDING"})
    body, meta, current = store.read_json("rec/a.json")
    assert body == {"n": 1} and meta == {"status": "PENDING"} and current == etag


def test_replace_json_needs_current_etag(store: ObjectStore) -> None:
    first = store.create_json("rec/b.json", {"n": 1}, {"status": "PENDING"})
    second = store.replace_json("rec/b.json", {"n": 2}, {"status": "PROCESSING"}, if_match=first)
    assert second != first
    with pytest.raises(PreconditionFailed):
        store.replace_json("rec/b.json", {"n": 3}, {"status": "FAILED"}, if_match=first)
    body, meta, etag = store.read_json("rec/b.json")
    assert body == {"n": 2} and meta["status"] == "PROCESSING" and etag == second
    with pytest.raises(PreconditionFailed):
        store.replace_json("rec/missing.json", {"n": 1}, {}, if_match=first)


def test_replayed_conditional_write_is_recognised(store: ObjectStore) -> None:
    """A retry of a write that had landed (answer lost) must not look like a conflict."""
    first = store.create_json("rec/c.json", {"n": 1, "writer": "a"}, {})
    assert store.create_json("rec/c.json", {"n": 1, "writer": "a"}, {}) == first
    second = store.replace_json("rec/c.json", {"n": 2, "writer": "a"}, {}, if_match=first)
    # Same request again, now with a stale ETag: it is ours, so it reports success...
    assert store.replace_json("rec/c.json", {"n": 2, "writer": "a"}, {}, if_match=first) == second
    # ...while anyone else's write from that ETag is still refused.
    with pytest.raises(PreconditionFailed):
        store.replace_json("rec/c.json", {"n": 2, "writer": "b"}, {}, if_match=first)


# SeaweedFS serialises conditional writes with a per-object lock whose waiters poll
# once a second, so wide races are slow: fewer rounds for 8 writers.
@pytest.mark.parametrize(("writers", "rounds"), [(2, 10), (8, 4)])
def test_racing_writers_exactly_one_wins(store: ObjectStore, writers: int, rounds: int) -> None:
    """The proof DESIGN.md asks for: N read-modify-writes from one ETag, one success."""
    key = f"race/{writers}.json"
    etag = store.create_json(key, {"winner": None, "round": 0}, {"status": "PENDING"})
    for round_no in range(1, rounds + 1):
        body, _, etag = store.read_json(key)
        barrier = threading.Barrier(writers)
        wins: list[int] = []
        losses: list[int] = []

        def write(i: int, base: str = etag, rnd: int = round_no) -> None:
            barrier.wait()
            try:
                store.replace_json(key, {"winner": i, "round": rnd}, {"status": f"W{i}"}, if_match=base)
                wins.append(i)
            except PreconditionFailed:
                losses.append(i)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, f"round {round_no}: winners {wins}"
        assert len(losses) == writers - 1
        body, meta, _ = store.read_json(key)
        assert body == {"winner": wins[0], "round": round_no}
        assert meta["status"] == f"W{wins[0]}"


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALKSERVE_S3_ENDPOINT", "https://minio.example:9000/")
    monkeypatch.setenv("TALKSERVE_S3_ACCESS_KEY", "ak")
    monkeypatch.setenv("TALKSERVE_S3_SECRET_KEY", "sk")
    monkeypatch.setenv("TALKSERVE_S3_BUCKET", "media")
    settings = StoreSettings()
    assert settings.endpoint == "minio.example:9000"
    assert settings.secure is True
    assert settings.secret_key.get_secret_value() == "sk"
    assert "sk" not in repr(settings)
    assert settings.bucket == "media" and settings.region == "us-east-1"


def test_unreachable_store_fails_within_the_retry_budget() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    dead = ObjectStore(
        StoreSettings(endpoint=f"127.0.0.1:{port}", access_key="a", secret_key="b", retry_for_s=1.0)
    )
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        dead.stat("x")
    assert not isinstance(err.value, NotFound)
    assert time.monotonic() - started < 5
