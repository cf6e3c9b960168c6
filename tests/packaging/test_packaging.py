"""Tests for stcloud.packaging (scan / build_archive / dataset_fingerprint)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from stcloud import packaging
from stcloud.packaging import (
    ArchiveTooLargeError,
    DatasetChangedError,
    DatasetNotADirectoryError,
    DatasetNotFoundError,
    DatasetUnreadableError,
    EmptyDatasetError,
    InvalidDataloaderConfigError,
    MiB,
    PackagingError,
    build_archive,
    dataset_fingerprint,
    exclusion_reason,
    scan,
)
from stcloud.packaging import archive as archive_mod

REPO_ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------- helpers
_BLOCK = os.urandom(MiB)


def write_random(path: Path, size: int) -> None:
    """Write ``size`` incompressible bytes in 1 MiB chunks (never the whole file in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        written, n = 0, 0
        while written < size:
            n += 1
            chunk = n.to_bytes(8, "little") + _BLOCK[8:]
            chunk = chunk[: size - written]
            fh.write(chunk)
            written += len(chunk)


def make_file(path: Path, data: bytes | str = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def make_dataset(root: Path, n_images: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        make_file(root / f"img{i}.jpg", os.urandom(64))
        make_file(root / f"img{i}.txt", f"a photo of thing {i}")
    return root


def cfg(*dirs, ids=None):
    ids = ids or [f"ds{i}" for i in range(len(dirs))]
    return [{"id": i, "type": "local", "instance_data_dir": str(d),
             "caption_strategy": "textfile"} for i, d in zip(ids, dirs, strict=False)]


def excluded_map(summary):
    return {e.path: e.reason for e in summary.excluded}


def included_paths(summary, index=0):
    return [f.path for f in summary.datasets[index].files]


def listdir_all(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.exists() else []


# ------------------------------------------------------------------ exclusion rules
EXCLUDED_CASES = [
    # (relative path to create, is_dir, expected reported path, reason substring)
    (".env", False, ".env", "secret file (.env*)"),
    (".env.local", False, ".env.local", "secret file (.env*)"),
    (".env.production", False, ".env.production", "secret file (.env*)"),
    ("sub/.env", False, "sub/.env", "secret file (.env*)"),
    (".git", True, ".git/", "git metadata"),
    (".ssh", True, ".ssh/", "SSH"),
    (".aws", True, ".aws/", "AWS"),
    ("credentials", False, "credentials", "credentials"),
    ("credentials.json", False, "credentials.json", "credentials"),
    ("Credentials.txt", False, "Credentials.txt", "credentials"),
    ("server.pem", False, "server.pem", "*.pem"),
    ("sub/deeper/cert.PEM", False, "sub/deeper/cert.PEM", "*.pem"),
    ("tls.key", False, "tls.key", "*.key"),
    ("id_rsa", False, "id_rsa", "id_rsa"),
    ("id_rsa.pub", False, "id_rsa.pub", "id_rsa"),
    (".netrc", False, ".netrc", "netrc"),
    (".DS_Store", False, ".DS_Store", "hidden file"),
    (".cache", True, ".cache/", "hidden directory"),
    ("sub/.thumbs", True, "sub/.thumbs/", "hidden directory"),
]


@pytest.mark.parametrize("rel, is_dir, reported, reason", EXCLUDED_CASES,
                         ids=[c[0] for c in EXCLUDED_CASES])
def test_exclusion_rule(tmp_path, rel, is_dir, reported, reason):
    root = make_dataset(tmp_path / "data")
    target = root / rel
    if is_dir:
        make_file(target / "config", "secret")
        make_file(target / "nested" / "more.jpg", b"x")
    else:
        make_file(target, "SECRET=1")
    summary = scan(cfg(root))
    ex = excluded_map(summary)
    assert reported in ex, ex
    assert reason in ex[reported]
    # a whole excluded directory is reported once, nothing inside it
    assert not [p for p in ex if p != reported and p.startswith(reported)]
    inc = included_paths(summary)
    assert not [p for p in inc if p == rel or p.startswith(rel + "/")]
    assert "img0.jpg" in inc and "img0.txt" in inc

    archive = build_archive(cfg(root), tmp_path / "out")
    with zipfile.ZipFile(archive.path) as zf:
        names = zf.namelist()
    assert not [n for n in names if rel in n]


@pytest.mark.parametrize("name", [
    "environment.txt", "my.env.txt", "keys.txt", "monkey.jpg", "pem_notes.txt",
    "git", "ssh.png", "not_id_rsa.txt", "photo.keyframe.jpg", "env.jpg",
])
def test_near_misses_are_included(tmp_path, name):
    root = make_dataset(tmp_path / "data")
    make_file(root / name, "ok")
    summary = scan(cfg(root))
    assert name in included_paths(summary)
    assert not summary.excluded


@pytest.mark.parametrize("name, expected", [
    (".env", "secret file (.env*)"), (".envrc", "secret file (.env*)"),
    (".git", "git metadata"), ("id_rsa.old", "SSH key (id_rsa*)"),
    ("a.KEY", "private key (*.key)"), (".hidden", "hidden file"),
    ("image.jpg", None), ("caption.txt", None),
])
def test_exclusion_reason_function(name, expected):
    assert exclusion_reason(name) == expected
    assert exclusion_reason(".x", is_dir=True) == "hidden directory"


# ------------------------------------------------------------------------- symlinks
def test_symlink_inside_root_is_followed(tmp_path):
    root = make_dataset(tmp_path / "data")
    make_file(root / "originals" / "cat.jpg", b"CAT")
    os.symlink("originals/cat.jpg", root / "alias.jpg")
    summary = scan(cfg(root))
    files = {f.path: f for f in summary.datasets[0].files}
    assert "alias.jpg" in files and files["alias.jpg"].size == 3
    archive = build_archive(cfg(root), tmp_path / "out")
    with zipfile.ZipFile(archive.path) as zf:
        assert zf.read("datasets/ds0/alias.jpg") == b"CAT"
        assert zf.read("datasets/ds0/originals/cat.jpg") == b"CAT"


def test_symlink_escaping_root_is_excluded(tmp_path):
    root = make_dataset(tmp_path / "data")
    outside = make_file(tmp_path / "outside" / "secret.txt", "top secret")
    os.symlink(outside, root / "abs.txt")
    os.symlink("../outside/secret.txt", root / "rel.txt")
    os.symlink(tmp_path / "outside", root / "outdir")
    summary = scan(cfg(root))
    ex = excluded_map(summary)
    for name in ("abs.txt", "rel.txt", "outdir"):
        assert ex[name] == "symlink leaves dataset root"
    archive = build_archive(cfg(root), tmp_path / "out")
    with zipfile.ZipFile(archive.path) as zf:
        for name in zf.namelist():
            assert zf.read(name) != b"top secret"


def test_symlink_to_excluded_file_inside_root_is_excluded(tmp_path):
    root = make_dataset(tmp_path / "data")
    make_file(root / ".env", "TOKEN=abc")
    make_file(root / ".git" / "config", "[core]")
    os.symlink(".env", root / "notes.txt")
    os.symlink(".git", root / "gitdir")
    ex = excluded_map(scan(cfg(root)))
    assert ex["notes.txt"] == "symlink to excluded path (secret file (.env*))"
    assert ex["gitdir"] == "symlink to excluded path (git metadata)"


def test_broken_symlink_is_excluded(tmp_path):
    root = make_dataset(tmp_path / "data")
    os.symlink("missing.jpg", root / "dangling.jpg")
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    ex = excluded_map(scan(cfg(root)))
    assert ex["dangling.jpg"] == "broken symlink"
    assert ex["loop_a"] == "symlink loop" and ex["loop_b"] == "symlink loop"


@pytest.mark.timeout(20)
def test_directory_symlink_loops_terminate(tmp_path):
    root = make_dataset(tmp_path / "data")
    make_file(root / "a" / "b" / "deep.jpg", b"D")
    os.symlink("..", root / "a" / "b" / "up")        # -> a (ancestor)
    os.symlink("../..", root / "a" / "b" / "top")    # -> root
    os.symlink(".", root / "self")                   # -> root
    os.symlink("a", root / "a_alias")                # -> inside root, not an ancestor
    summary = scan(cfg(root))
    ex = excluded_map(summary)
    assert ex["a/b/up"] == "symlink loop"
    assert ex["a/b/top"] == "symlink loop"
    assert ex["self"] == "symlink loop"
    assert ex["a_alias"].startswith("symlinked directory")
    inc = included_paths(summary)
    assert inc.count("a/b/deep.jpg") == 1
    assert not [p for p in inc if "up/" in p or "top/" in p or "self/" in p]
    build_archive(cfg(root), tmp_path / "out")


def test_dataset_root_may_be_a_symlink(tmp_path):
    real = make_dataset(tmp_path / "real")
    os.symlink(real, tmp_path / "link")
    make_file(real / "inner_link_target.txt", "x")
    os.symlink(real / "inner_link_target.txt", real / "abs_inside.txt")
    summary = scan(cfg(tmp_path / "link"))
    assert "abs_inside.txt" in included_paths(summary)
    assert summary.datasets[0].source_dir == str(real.resolve())


def test_non_regular_files_are_excluded(tmp_path):
    root = make_dataset(tmp_path / "data")
    os.mkfifo(root / "pipe.jpg")
    sock_path = root / "s.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(sock_path))
        summary = scan(cfg(root))
        ex = excluded_map(summary)
        assert ex["pipe.jpg"] == "not a regular file (fifo)"
        assert ex["s.sock"] == "not a regular file (socket)"
        archive = build_archive(cfg(root), tmp_path / "out")  # must not block on the fifo
        assert "datasets/ds0/pipe.jpg" not in zipfile.ZipFile(archive.path).namelist()
    finally:
        sock.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read everything")
def test_unreadable_entries(tmp_path):
    root = make_dataset(tmp_path / "data")
    make_file(root / "locked" / "x.jpg")
    make_file(root / "private.jpg")
    os.chmod(root / "locked", 0)
    os.chmod(root / "private.jpg", 0)
    try:
        ex = excluded_map(scan(cfg(root)))
        assert ex["locked/"].startswith("unreadable directory")
        assert ex["private.jpg"].startswith("unreadable file")
        os.chmod(root, 0)
        with pytest.raises(DatasetUnreadableError, match="ds0"):
            scan(cfg(root))
    finally:
        os.chmod(root, 0o755)
        os.chmod(root / "locked", 0o755)


def test_non_utf8_file_name_is_excluded(tmp_path):
    root = make_dataset(tmp_path / "data")
    with open(os.path.join(os.fsencode(root), b"bad\xff.jpg"), "wb") as fh:
        fh.write(b"x")
    summary = scan(cfg(root))
    assert "file name is not valid UTF-8" in excluded_map(summary).values()
    build_archive(cfg(root), tmp_path / "out")


# ----------------------------------------------------------------- datasets & config
def test_same_basename_datasets_do_not_collide(tmp_path):
    a = make_file(tmp_path / "a" / "images" / "same.jpg", b"from a").parent
    b = make_file(tmp_path / "b" / "images" / "same.jpg", b"from b").parent
    config = cfg(a, b, ids=["portraits", "landscapes"])
    archive = build_archive(config, tmp_path / "out")
    folders = [d.folder for d in archive.summary.datasets]
    assert folders == ["portraits", "landscapes"]
    with zipfile.ZipFile(archive.path) as zf:
        assert zf.read("datasets/portraits/same.jpg") == b"from a"
        assert zf.read("datasets/landscapes/same.jpg") == b"from b"
    assert [d["instance_data_dir"] for d in archive.dataloader_config] == [
        "datasets/portraits", "datasets/landscapes"]


def test_ids_that_sanitise_alike_get_suffixes(tmp_path):
    a = make_dataset(tmp_path / "a" / "images")
    b = make_dataset(tmp_path / "b" / "images")
    c = make_dataset(tmp_path / "c" / "images")
    summary = scan(cfg(a, b, c, ids=["my set", "my_set", "MY/SET"]))
    assert [d.folder for d in summary.datasets] == ["my_set", "my_set-2", "MY_SET-3"]
    s2 = scan(cfg(a, b, ids=["../../etc", ".hidden"]))
    assert [d.folder for d in s2.datasets] == ["etc", "hidden"]


def test_two_datasets_sharing_a_directory_are_stored_once(tmp_path):
    root = make_dataset(tmp_path / "data", n_images=3)
    config = cfg(root, root, ids=["hi-res", "lo-res"])
    config[1]["resolution"] = 512
    archive = build_archive(config, tmp_path / "out")
    s = archive.summary
    assert s.datasets[1].shares_folder_with == "hi-res"
    assert s.total_files == 6 and s.dataset_count == 2
    assert [d["instance_data_dir"] for d in archive.dataloader_config] == [
        "datasets/hi-res", "datasets/hi-res"]
    assert len(zipfile.ZipFile(archive.path).namelist()) == 6


def test_non_local_datasets_are_skipped(tmp_path):
    root = make_dataset(tmp_path / "data")
    config = [
        {"id": "local-one", "type": "local", "instance_data_dir": str(root)},
        {"id": "no-type", "instance_data_dir": str(root / "..") + "/data"},
        {"id": "hf", "type": "huggingface", "dataset_name": "user/ds"},
        {"id": "s3", "type": "aws", "aws_bucket_name": "b", "instance_data_dir": "/nope"},
        {"id": "text-cache", "dataset_type": "text_embeds", "type": "local",
         "cache_dir": "/nonexistent/cache/text", "default": True},
        {"id": "img-cache", "dataset_type": "image_embeds", "type": "local",
         "cache_dir": "/nonexistent/cache/vae"},
        {"id": "off", "type": "local", "instance_data_dir": "/nonexistent", "disabled": True},
    ]
    archive = build_archive(config, tmp_path / "out")
    s = archive.summary
    assert [d.id for d in s.datasets] == ["local-one", "no-type"]
    skipped = {k.id: k.reason for k in s.skipped}
    assert set(skipped) == {"hf", "s3", "text-cache", "img-cache", "off"}
    assert "huggingface" in skipped["hf"] and "text_embeds" in skipped["text-cache"]
    d = s.to_dict()
    assert [x["id"] for x in d["not_packaged"]] == ["hf", "s3", "text-cache", "img-cache", "off"]
    # non-packaged entries are left exactly as they were
    assert archive.dataloader_config[2:] == config[2:]
    assert archive.dataloader_config[0]["instance_data_dir"] == "datasets/local-one"
    assert config[0]["instance_data_dir"] == str(root)  # input not mutated


def test_config_as_json_text_and_relative_dirs(tmp_path):
    make_dataset(tmp_path / "base" / "sets" / "cats")
    text = json.dumps([{"id": "cats", "instance_data_dir": "sets/cats"}])
    summary = scan(text, base_dir=tmp_path / "base")
    assert summary.datasets[0].source_dir == str((tmp_path / "base/sets/cats").resolve())


def test_empty_dataset_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyDatasetError) as err:
        scan(cfg(tmp_path / "empty", ids=["blank"]))
    assert "blank" in str(err.value) and str(tmp_path / "empty") in str(err.value)

    only_secrets = tmp_path / "secrets"
    make_file(only_secrets / ".env", "X=1")
    make_file(only_secrets / ".git" / "HEAD", "ref")
    with pytest.raises(EmptyDatasetError, match="all 2 entries were excluded") as err:
        build_archive(cfg(only_secrets, ids=["oops"]), tmp_path / "out")
    assert "oops" in str(err.value)
    assert listdir_all(tmp_path / "out") == []


def test_missing_directory_error(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(DatasetNotFoundError) as err:
        scan(cfg(missing, ids=["portraits"]))
    msg = str(err.value)
    assert "portraits" in msg and str(missing) in msg and "does not exist" in msg
    assert err.value.dataset_id == "portraits" and isinstance(err.value, PackagingError)

    with pytest.raises(DatasetNotFoundError) as err:
        scan([{"id": "rel", "instance_data_dir": "sub/dir"}], base_dir=tmp_path)
    assert "'sub/dir'" in str(err.value) and str(tmp_path / "sub" / "dir") in str(err.value)


def test_not_a_directory_error(tmp_path):
    f = make_file(tmp_path / "file.jpg")
    with pytest.raises(DatasetNotADirectoryError, match=r"'ds0'.*not a directory"):
        scan(cfg(f))


@pytest.mark.parametrize("bad", [
    {"id": "x"}, "not json", 42, [1, 2], [{"id": "x", "type": "local"}],
    [{"id": "x", "instance_data_dir": 5}],
])
def test_invalid_config(bad):
    with pytest.raises(InvalidDataloaderConfigError):
        scan(bad)


# --------------------------------------------------------------------------- archive
def test_archive_members_equal_scan_and_contents_match(tmp_path):
    root = make_dataset(tmp_path / "data", n_images=5)
    make_file(root / "sub" / "deep" / "clip.mp4", os.urandom(1000))
    make_file(root / "meta.json", json.dumps({"a": 1} ) * 100)
    make_file(root / ".env", "X=1")
    config = cfg(root)
    summary = scan(config)
    archive = build_archive(config, tmp_path / "out")
    expected = sorted(f"datasets/ds0/{p}" for p in included_paths(summary))
    with zipfile.ZipFile(archive.path) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == expected == summary.archive_names()
        for info in zf.infolist():
            rel = info.filename.removeprefix("datasets/ds0/")
            assert zf.read(info) == (root / rel).read_bytes()
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            if rel.endswith((".jpg", ".mp4")):
                assert info.compress_type == zipfile.ZIP_STORED
            else:
                assert info.compress_type == zipfile.ZIP_DEFLATED
    assert archive.path == tmp_path / "out" / f"{archive.sha256}.zip"
    assert archive.size == archive.path.stat().st_size
    assert archive.sha256 == packaging.sha256_file(archive.path)
    s = archive.summary
    assert s.min_archive_bytes <= archive.size <= s.estimated_archive_bytes
    assert s.datasets[0].image_count == 5 and s.datasets[0].caption_count == 5
    assert s.datasets[0].video_count == 1


def test_archive_is_deterministic(tmp_path):
    root = make_dataset(tmp_path / "data", n_images=4)
    make_file(root / "notes.md", "hello " * 500)
    config = cfg(root)
    first = build_archive(config, tmp_path / "out1")
    # touching files (mtime) and building elsewhere does not change the bytes
    for p in root.iterdir():
        os.utime(p, (1_700_000_000, 1_700_000_000))
    second = build_archive(config, tmp_path / "out2")
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    fp1 = dataset_fingerprint(config)
    assert fp1 == dataset_fingerprint(config)
    (root / "img0.txt").write_text("a different caption")
    third = build_archive(config, tmp_path / "out3")
    assert third.sha256 != first.sha256
    assert dataset_fingerprint(config) != fp1


def test_fingerprint_modes(tmp_path):
    root = make_dataset(tmp_path / "data")
    config = cfg(root)
    content_fp = dataset_fingerprint(config)
    stat_fp = dataset_fingerprint(config, content=False)
    assert content_fp != stat_fp and len(content_fp) == 64
    os.utime(root / "img0.jpg", (1_600_000_000, 1_600_000_000))
    assert dataset_fingerprint(config) == content_fp       # content unchanged
    assert dataset_fingerprint(config, content=False) != stat_fp
    make_file(root / ".env", "hidden files do not count")
    assert dataset_fingerprint(config) == content_fp


def test_archive_name_and_progress(tmp_path):
    root = tmp_path / "data"
    write_random(root / "big.jpg", 5 * MiB + 123)
    make_file(root / "big.txt", "caption")
    calls = []
    archive = build_archive(cfg(root), tmp_path / "out", archive_name="upload.zip",
                            progress=lambda *a: calls.append(a))
    assert archive.path == tmp_path / "out" / "upload.zip"
    assert listdir_all(tmp_path / "out") == ["upload.zip"]
    assert calls[0] == ("scan", 1, 1)
    pkg = [c for c in calls if c[0] == "package"]
    total = 5 * MiB + 123 + len("caption")
    assert pkg[0] == ("package", 0, total) and pkg[-1] == ("package", total, total)
    dones = [c[1] for c in pkg]
    assert dones == sorted(dones) and len(pkg) <= 5 + 3
    with pytest.raises(PackagingError, match="plain file name"):
        build_archive(cfg(root), tmp_path / "out", archive_name="../escape.zip")


def test_summary_to_dict_caps_excluded(tmp_path):
    root = make_dataset(tmp_path / "data")
    for i in range(250):
        make_file(root / f".hidden{i:03d}", "x")
    d = scan(cfg(root)).to_dict()
    json.dumps(d)
    assert len(d["excluded"]) == 200 and d["excluded_more"] == 50
    assert d["excluded"][0] == {"dataset": "ds0", "path": ".hidden000",
                                "reason": "hidden file", "is_dir": False}
    totals = d["totals"]
    assert (totals["datasets"], totals["files"], totals["excluded"]) == (1, 4, 250)
    assert totals["bytes"] == sum((tmp_path / "data" / f"img{i}.{ext}").stat().st_size
                                  for i in range(2) for ext in ("jpg", "txt"))
    assert d["datasets"][0]["excluded"] == 250
    assert len(scan(cfg(root)).to_dict(max_excluded=10)["excluded"]) == 10


# ------------------------------------------------------------------ size limits
@pytest.fixture
def big_dataset(tmp_path):
    root = tmp_path / "big"
    for i in range(150):
        write_random(root / f"img{i:03d}.jpg", MiB + 2 * 1024)  # ~150.3 MiB in total
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_too_large_refused_before_writing(big_dataset, tmp_path, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("archive writing started")

    monkeypatch.setattr(archive_mod.zipfile, "ZipFile", forbidden)
    monkeypatch.setattr(archive_mod.tempfile, "mkstemp", forbidden)
    dest = tmp_path / "out"
    with pytest.raises(ArchiveTooLargeError) as err:
        build_archive(cfg(big_dataset), dest, max_bytes=100 * MiB, limit_name="Replicate")
    msg = str(err.value)
    assert msg.startswith("Dataset archive is 150.3 MiB; Replicate accepts at most 100 MiB"), msg
    assert err.value.estimated and err.value.max_bytes == 100 * MiB
    assert err.value.size > 150 * MiB
    assert not dest.exists()


def test_too_large_after_compression_estimate_is_removed(tmp_path):
    # deflatable extension: the lower-bound estimate passes, the real archive does not
    root = tmp_path / "data"
    write_random(root / "blob.bin", 3 * MiB)
    dest = tmp_path / "out"
    summary = scan(cfg(root))
    assert summary.min_archive_bytes < 2 * MiB
    with pytest.raises(ArchiveTooLargeError, match=r"MiB; the upload target accepts at most 2 MiB"):
        build_archive(cfg(root), dest, max_bytes=2 * MiB)
    assert listdir_all(dest) == []


def test_final_size_check(tmp_path):
    root = make_dataset(tmp_path / "data")
    summary = scan(cfg(root))
    limit = summary.min_archive_bytes  # passes the estimate, real archive is larger
    with pytest.raises(ArchiveTooLargeError) as err:
        build_archive(cfg(root), tmp_path / "out", max_bytes=limit)
    assert not err.value.estimated
    assert listdir_all(tmp_path / "out") == []
    ok = build_archive(cfg(root), tmp_path / "out", max_bytes=summary.estimated_archive_bytes)
    assert ok.size <= summary.estimated_archive_bytes


# -------------------------------------------------------------- failure cleanup
def test_no_temp_files_after_read_failure(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", n_images=3)
    real_open = archive_mod.open_included
    calls = {"n": 0}

    def flaky(f):
        calls["n"] += 1
        if calls["n"] == 3:
            raise DatasetUnreadableError(f"Cannot read {f.source}: boom")
        return real_open(f)

    monkeypatch.setattr(archive_mod, "open_included", flaky)
    dest = tmp_path / "out"
    with pytest.raises(DatasetUnreadableError, match="boom"):
        build_archive(cfg(root), dest)
    assert dest.exists() and listdir_all(dest) == []


def test_file_changed_during_packaging(tmp_path):
    root = make_dataset(tmp_path / "data")

    def grow(stage, done, total):
        if stage == "package" and done == 0:
            with open(root / "img1.txt", "a") as fh:
                fh.write(" and more")

    dest = tmp_path / "out"
    with pytest.raises(DatasetChangedError, match="img1.txt"):
        build_archive(cfg(root), dest, progress=grow)
    assert listdir_all(dest) == []

    def shrink(stage, done, total):
        if stage == "package" and done == 0:
            (root / "img1.jpg").write_bytes(b"")

    with pytest.raises(DatasetChangedError, match="img1.jpg"):
        build_archive(cfg(root), dest, progress=shrink)

    def swap(stage, done, total):
        if stage == "package" and done == 0:
            (root / "img0.jpg").unlink()
            os.mkfifo(root / "img0.jpg")

    with pytest.raises(DatasetChangedError, match="replaced"):
        build_archive(cfg(root), dest, progress=swap)
    assert listdir_all(dest) == []


def test_interrupt_removes_temp_file(tmp_path):
    root = tmp_path / "data"
    write_random(root / "a.jpg", 3 * MiB)

    def interrupt(stage, done, total):
        if stage == "package" and done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_archive(cfg(root), tmp_path / "out", progress=interrupt)
    assert listdir_all(tmp_path / "out") == []


# -------------------------------------------------------------------------- memory
MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from stcloud.packaging import build_archive, scan
    config = json.loads(sys.argv[2])
    scan(config)  # warm up imports / caches
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    archive = build_archive(config, sys.argv[3])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kib": base, "peak_kib": peak, "size": archive.size}))
""")


@pytest.mark.timeout(120)
def test_memory_stays_flat_while_zipping(tmp_path):
    root = tmp_path / "mem"
    try:
        write_random(root / "huge.png", 120 * MiB)     # one big stored file
        write_random(root / "big.dat", 40 * MiB)       # one big deflated file
        for i in range(40):
            write_random(root / "many" / f"{i:02d}.jpg", MiB)
        config = cfg(root)
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(REPO_ROOT), json.dumps(config),
             str(tmp_path / "out")],
            capture_output=True, text=True, timeout=110, check=False)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["size"] > 200 * MiB
        growth_mib = (result["peak_kib"] - result["base_kib"]) / 1024
        assert growth_mib < 50, f"peak RSS grew by {growth_mib:.1f} MiB while zipping"
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
