"""Dataset roots (``STCLOUD_DATASET_ROOTS``) and zero-image datasets: refused at data-preview
and at submit (API, Submit page, CLI) before any job row exists."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from stcloud import db
from stcloud.jobs.cli_submit import submit_command
from stcloud.models import Job
from stcloud.packaging import roots
from tests.conftest import csrf_of
from tests.providers.fixtures import CONFIG, make_dataset

pytestmark = pytest.mark.timeout(60)


def body_for(path: str, ds_id: str = "photos") -> dict:
    return {"provider": "local", "name": "roots-job", "config": dict(CONFIG),
            "dataloader_config": [{"id": ds_id, "type": "local", "dataset_type": "image",
                                   "instance_data_dir": path, "caption_strategy": "textfile"}]}


@pytest.fixture
def rooted(make_app, tmp_path, monkeypatch):
    """An app whose only dataset roots are ``tmp/roots/a`` and ``tmp/roots/b``."""
    a, b = tmp_path / "roots" / "a", tmp_path / "roots" / "b"
    make_dataset(a / "cats")
    make_dataset(b / "dogs")
    (tmp_path / "outside").mkdir()
    make_dataset(tmp_path / "outside" / "secret-set")
    monkeypatch.setenv("STCLOUD_DATASET_ROOTS", f"{a}:{b}")
    app = make_app()
    app.roots = (a, b)
    return app


def job_count(app) -> int:
    with app.app_context(), db.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


# ---- the pure rules -------------------------------------------------------------------------

def test_parse_roots_defaults_to_home_datasets_and_the_sample(tmp_path):
    home = tmp_path / "h"
    assert roots.parse_roots(None, home) == [os.path.realpath(home / "datasets"), os.path.realpath(home / "sample")]
    assert roots.parse_roots("", home) == roots.parse_roots(None, home)
    assert roots.parse_roots(f"{tmp_path}/x::{tmp_path}/x:rel", home) == [
        os.path.realpath(tmp_path / "x"), os.path.realpath(home / "rel")]


def test_check_inside_follows_dotdot_and_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "ok").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    allowed = [str(root)]
    roots.check_inside([{"id": "a", "instance_data_dir": "ok"}], allowed)  # relative to the first root
    roots.check_inside([{"id": "a", "instance_data_dir": str(root / "ok")}], allowed)
    for bad in (f"{root}/ok/../../elsewhere", "../elsewhere", str(root / "link"), "/etc", "../../../etc",
                f"{root}/../root-sibling"):
        with pytest.raises(roots.DatasetOutsideRootsError) as exc:
            roots.check_inside([{"id": "a", "instance_data_dir": bad}], allowed)
        assert "outside the dataset roots" in str(exc.value) and exc.value.dataset_id == "a"
    # a root's sibling with the same prefix is not inside it
    (tmp_path / "root2").mkdir()
    with pytest.raises(roots.DatasetOutsideRootsError):
        roots.check_inside([{"id": "a", "instance_data_dir": str(tmp_path / "root2")}], allowed)
    # remote datasets, caches and disabled entries are not read from disk: not checked
    roots.check_inside([{"id": "r", "type": "aws", "instance_data_dir": "/etc"},
                        {"id": "t", "dataset_type": "text_embeds", "instance_data_dir": "/etc"},
                        {"id": "d", "disabled": True, "instance_data_dir": "/etc"}], allowed)


# ---- API ------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink", "relative"])
def test_api_refuses_paths_outside_the_roots(rooted, tmp_path, where):
    a, _b = rooted.roots
    (a / "to-outside").symlink_to(tmp_path / "outside" / "secret-set")
    path = {"dotdot": f"{a}/cats/../../../outside/secret-set", "absolute": "/etc",
            "symlink": str(a / "to-outside"), "relative": "../../../../../etc"}[where]
    c = rooted.test_client()
    for url in ("/api/cloud/data-preview", "/api/cloud/jobs/submit"):
        r = c.post(url, json=body_for(path))
        assert r.status_code == 400, r.get_data(as_text=True)
        assert r.content_type.startswith("application/problem+json")
        problem = r.get_json()
        assert problem["field"] == "dataloader_config" and problem["dataset"] == "photos"
        assert "outside the dataset roots" in problem["detail"]
    assert job_count(rooted) == 0


def test_relative_paths_resolve_against_the_first_root(rooted):
    c = rooted.test_client()
    r = c.post("/api/cloud/data-preview", json=body_for("cats"))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["summary"]["datasets"][0]["source_dir"] == os.path.realpath(rooted.roots[0] / "cats")
    # the second root is allowed by absolute path (a relative "dogs" is looked for in the first)
    assert c.post("/api/cloud/data-preview", json=body_for(str(rooted.roots[1] / "dogs"))).status_code == 200
    r = c.post("/api/cloud/data-preview", json=body_for("dogs"))
    assert r.status_code == 400 and "does not exist" in r.get_json()["detail"]


def test_zero_image_dataset_is_refused_with_its_id(rooted):
    a, _b = rooted.roots
    notes = a / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("no pictures here\n")
    (notes / "data.csv").write_text("a,b\n")
    c = rooted.test_client()
    for url in ("/api/cloud/data-preview", "/api/cloud/jobs/submit"):
        r = c.post(url, json=body_for("notes", ds_id="text-only"))
        assert r.status_code == 400
        problem = r.get_json()
        assert problem["dataset"] == "text-only" and problem["field"] == "dataloader_config"
        assert "Dataset 'text-only' has no images" in problem["detail"]
    assert job_count(rooted) == 0


def test_submit_inside_a_root_still_creates_the_job(rooted):
    r = rooted.test_client().post("/api/cloud/jobs/submit", json=body_for("cats"))
    assert r.status_code == 201, r.get_data(as_text=True)
    assert job_count(rooted) == 1


# ---- Submit page and CLI --------------------------------------------------------------------

def test_submit_page_shows_the_refusal(rooted):
    c = rooted.test_client()
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf_of(c)}
    form = {"provider": "local", "name": "page", "config_json": json.dumps(CONFIG),
            "dataloader_json": json.dumps(body_for("/etc")["dataloader_config"]),
            "idempotency_key": "roots-page-1", "delivery_type": ""}
    for url in ("/submit/preview", "/submit"):
        r = c.post(url, headers=headers, data=form)
        html = r.get_data(as_text=True)
        assert "outside the dataset roots" in html, (url, r.status_code)
    assert job_count(rooted) == 0


def test_cli_sends_the_path_and_prints_one_line(rooted, tmp_path):
    from tests.conftest import serve_in_thread

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    dl = tmp_path / "dataloader.json"
    dl.write_text(json.dumps(body_for("../../../etc")["dataloader_config"]))
    with serve_in_thread(rooted) as url:
        r = CliRunner().invoke(submit_command, ["--server", url, "--provider", "local", "--config", str(cfg),
                                                "--dataloader", str(dl), "--yes"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 400") and "outside the dataset roots" in lines[0]
    assert "'../../../etc'" in lines[0]  # sent as written, resolved by the server
    assert job_count(rooted) == 0
