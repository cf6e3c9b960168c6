"""Config names map to distinct, collision-free snapshot directories; snapshots committed under
the earlier (legacy) directory names are still found."""
from __future__ import annotations

import unicodedata

import pytest

from stcloud.snapshots import git, service

TRICKY = [".git", "git", "..", "unnamed", "", "My LoRA", "my lora", "my-lora", "MY-LORA", "My-Lora",
          unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"),
          "x" * 300, "x" * 300 + "y", "x" * 100, "a/b", "a-b", "a--b", "-rf", "rf"]


def test_distinct_names_get_distinct_directories():
    dirs = [service.safe_name(n) for n in TRICKY]
    assert len(set(dirs)) == len(TRICKY), dict(zip(TRICKY, dirs, strict=True))
    # also distinct on a case-insensitive file system
    assert len({d.lower() for d in dirs}) == len(TRICKY)
    for d in dirs:
        assert service.is_dir_name(d) and "/" not in d and not d.startswith((".", "-")) and len(d) <= 114
    # readable: a plain lower-case name is its own directory; others keep their slug
    assert service.safe_name("my-lora") == "my-lora" and service.safe_name("git") == "git"
    assert service.safe_name(".git").startswith("git--") and service.safe_name("..").startswith("unnamed--")
    assert service.safe_name("My LoRA").startswith("My-LoRA--")


@pytest.mark.parametrize("bad", ["..", ".git", "a/b", "../x--0123456789ab", "x--0123456789ab/..", "", "-rf"])
def test_route_names_that_are_not_directories_are_refused(bad):
    assert not service.is_dir_name(bad)


def test_each_tricky_name_has_its_own_history(app, tmp_path):
    if not git.git_path():
        pytest.skip("git not installed")
    home = str(tmp_path / "snaphome")
    for i, name in enumerate(TRICKY):
        sha, err = service.snapshot_for_submit(home, name, {"n": i}, [], f"job_{i:03d}")
        assert sha and err is None, (name, err)
    configs = service.list_configs(home)
    assert len(configs) == len(TRICKY)
    assert all(c["snapshots"] == 1 for c in configs)
    for i, name in enumerate(TRICKY):
        hist = service.history(home, service.safe_name(name))
        assert [h["job_id"] for h in hist] == [f"job_{i:03d}"]
        at = service.files_at(home, service.safe_name(name), hist[0]["commit"])
        assert at["config"] == {"n": i}


def test_snapshots_under_the_legacy_directory_are_still_found(app, tmp_path):
    if not git.git_path():
        pytest.skip("git not installed")
    home = str(tmp_path / "legacyhome")
    root = service.repo_root(home)
    name = "My LoRA"
    legacy = service.legacy_name(name)
    assert legacy == "My-LoRA" != service.safe_name(name)
    # a snapshot as the earlier code wrote it: under the slug
    old = git.commit_files(root, legacy, {git.CONFIG_FILE: git.dumps({"lr": 1}), git.DATALOADER_FILE: "[]\n"},
                           service.commit_message(legacy, "job_old", None))
    ref = service.JobRef(id="job_old", name=name, config_name=name, snapshot=old, snapshot_error=None)
    view = service.job_snapshot(home, ref)
    assert view["error"] is None and view["config_name"] == legacy
    assert '"lr": 1' in view["files"][git.CONFIG_FILE]
    assert service.committed_config(home, name, old) == ({"lr": 1}, [])
    assert [h["job_id"] for h in service.history(home, legacy)] == ["job_old"]
    # a new run of the same name goes to its collision-free directory
    new, err = service.snapshot_for_submit(home, name, {"lr": 2}, [], "job_new")
    assert err is None
    ref_new = service.JobRef(id="job_new", name=name, config_name=name, snapshot=new, snapshot_error=None)
    assert service.job_snapshot(home, ref_new)["config_name"] == service.safe_name(name)
    assert service.committed_config(home, name, new) == ({"lr": 2}, [])
