"""The sample image of each reference-trainer checkpoint: rendered from the adapter being
saved, deterministic, and identical whether the run was resumed or not."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from stcloud.trainer.sample import ensure_sample
from stcloud.trainer.samples import MAX_PROBES, SAMPLE_NAME, ZOOM
from tests.trainer.test_trainer import run_trainer

RES = 16


def _config(tmp_path: Path, **overrides) -> Path:
    sample = ensure_sample(tmp_path / "sample")
    cfg = json.loads(Path(sample["config_path"]).read_text())
    cfg.update({"max_train_steps": 20, "checkpointing_steps": 10, "resolution": RES, "resume_from_checkpoint": None,
                "checkpoints_total_limit": None, "learning_rate": 3e-3, **overrides})
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.json"
    path.write_text(json.dumps(cfg))
    return path


def _run(tmp_path: Path, name: str, **overrides) -> Path:
    out = tmp_path / name
    proc = run_trainer("--config", _config(tmp_path, **overrides), "--output-dir", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return out


def test_each_checkpoint_has_a_sample_rendered_from_its_adapter(tmp_path):
    a = _run(tmp_path, "a")
    b = _run(tmp_path, "b")
    s10, s20 = (a / "checkpoint-10" / SAMPLE_NAME).read_bytes(), (a / "checkpoint-20" / SAMPLE_NAME).read_bytes()
    assert s10.startswith(b"\x89PNG\r\n\x1a\n")
    # deterministic: the same run renders the same bytes; training changes the picture
    assert s10 == (b / "checkpoint-10" / SAMPLE_NAME).read_bytes()
    assert s20 == (b / "checkpoint-20" / SAMPLE_NAME).read_bytes()
    assert s10 != s20
    img = np.asarray(Image.open(io.BytesIO(s20)))
    tile = RES * ZOOM
    assert img.shape[:2] == (MAX_PROBES * tile, 4 * tile)
    # the third column is the adapter's own contribution: real, varying pixels
    delta = img[:tile, 2 * tile:3 * tile]
    assert delta.std() > 5


def test_a_resumed_run_renders_the_same_sample(tmp_path):
    whole = _run(tmp_path, "whole")
    part = _run(tmp_path, "part", max_train_steps=10)
    resumed = tmp_path / "part"
    proc = run_trainer("--config", _config(tmp_path, resume_from_checkpoint="latest"), "--output-dir", resumed,
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from checkpoint" in proc.stdout
    assert part == resumed
    assert (resumed / "checkpoint-20" / SAMPLE_NAME).read_bytes() == (whole / "checkpoint-20" / SAMPLE_NAME).read_bytes()
