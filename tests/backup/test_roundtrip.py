"""Round trips through a repository on a local directory and on SeaweedFS: trees compare exactly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flex.backup import Repository, backup, check, lock, open_store, restore
from flex.errors import PermissionDenied
from tests.backup.conftest import PASSWORD, describe, make_tree

ROOT = os.geteuid() == 0


@pytest.fixture(scope="module", params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path_factory.mktemp("repo") / "backups")
    else:
        yield f"s3:{request.getfixturevalue('seaweedfs')}/flex-{os.getpid()}/repo"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src") / "tree", uid_base=100000 if ROOT else 0)


def test_round_trip_keeps_everything_and_shifts_owners(location: str, tree: Path, tmp_path: Path) -> None:
    repo = Repository.open_or_init(open_store(location), PASSWORD)
    with lock(repo):
        snap, summary = backup(repo, {"tree": tree}, id_offset=100000 if ROOT else 0, tags=["env:a"])
    assert summary.files_new == 5 and summary.files_unmodified == 0
    assert summary.bytes_read < (64 << 20), "holes are not read as data"

    again = Repository.open(open_store(location), PASSWORD)
    restore(again, again.find_snapshot(snap.short_id), tmp_path / "out", id_offset=200000 if ROOT else 0)
    want = describe(tree, uid_base=100000 if ROOT else 0)
    got = describe(tmp_path / "out" / "tree", uid_base=200000 if ROOT else 0)
    assert got == want
    assert got["sparse.img"]["sparse"] and got["hardlink.txt"]["linked_to"] == got["dir/hello.txt"]["linked_to"]
    assert check(again, read_data=True).ok


def test_second_run_reads_nothing_and_adds_almost_nothing(location: str, tree: Path) -> None:
    repo = Repository.open_or_init(open_store(location), PASSWORD)
    parent = repo.snapshots()[-1]
    with lock(repo):
        _, summary = backup(repo, {"tree": tree}, id_offset=100000 if ROOT else 0, parent=parent, tags=["env:a"])
    assert summary.files_unmodified == 5 and summary.bytes_read == 0
    assert summary.bytes_added < 20_000  # no file data; at most trees whose atimes the restore check moved

    (tree / "dir" / "new.txt").write_text("new\n")
    with lock(repo):
        _, summary = backup(repo, {"tree": tree}, id_offset=100000 if ROOT else 0, parent=repo.snapshots()[-1],
                            tags=["env:a"])
    assert summary.files_new == 1 and summary.bytes_read == 4
    os.unlink(tree / "dir" / "new.txt")


def test_wrong_password_is_refused(location: str) -> None:
    with pytest.raises(PermissionDenied, match="wrong password"):
        Repository.open(open_store(location), b"not it")


def test_identical_data_from_another_source_is_stored_once(location: str, tree: Path, tmp_path: Path) -> None:
    repo = Repository.open_or_init(open_store(location), PASSWORD)
    other = tmp_path / "other"
    other.mkdir()
    (other / "copy.bin").write_bytes((tree / "dir" / "big.bin").read_bytes())
    (other / "own.txt").write_text("only here\n")
    with lock(repo):
        _, summary = backup(repo, {"other": other}, tags=["env:b"])
    assert summary.files_new == 2
    # A chunk is at least 512 KiB; what is new is own.txt and two trees, whose size varies with the metadata.
    assert summary.bytes_added < 64 << 10, "the 4 MiB copy dedups against the first environment's data"


def test_s3_large_packs_go_up_in_parts_and_no_credential_is_logged(
        seaweedfs: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from flex.backup.stores.s3 import S3Store

    caplog.set_level(logging.DEBUG)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(20 << 20))
    store = open_store(f"s3:{seaweedfs}/flex-multipart")
    assert isinstance(store, S3Store)
    repo = Repository.init(store, PASSWORD)
    with lock(repo):
        snap, _ = backup(repo, {"src": src})
    packs = list(store.list("data/"))
    etags = [store._client.stat_object(store.bucket, p).etag or "" for p in packs]
    assert any("-" in e for e in etags), f"a 16 MiB pack is a multipart upload (ETag md5-N): {etags}"
    restore(repo, snap, tmp_path / "out", durable=False)
    assert (tmp_path / "out" / "src" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert secret not in caplog.text and secret not in repr(store) and secret not in store.location


def test_s3_unreachable_is_retried_then_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    from flex.backup.stores.s3 import S3Store
    from flex.errors import Unavailable

    with socket.socket() as s:  # a port nobody listens on: connection refused, for real
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-secret-that-must-not-show")
    t = time.monotonic()
    with pytest.raises(Unavailable, match="failed 6 times") as err:
        S3Store(f"s3:http://127.0.0.1:{port}/bucket", backoff=0.01)
    assert time.monotonic() - t >= 0.01 * (1 + 2 + 4 + 8 + 16) * 0.5, "backs off between attempts"
    assert "a-secret-that-must-not-show" not in str(err.value) + str(err.value.hint)
