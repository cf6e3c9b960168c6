"""Tests for the reference trainer (stcloud.trainer) and its sample dataset.

Training runs are real subprocesses (``python -m stcloud.trainer``), the way the
runner and workers start them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from stcloud.trainer import protocol
from stcloud.trainer.core import TrainerError, learning_rate_at, parse_config
from stcloud.trainer.sample import NUM_IMAGES, ensure_sample

REPO_ROOT = Path(__file__).resolve().parents[2]
STEP_RE = re.compile(r"^step (\d+)/(\d+)")
LOSS_RE = re.compile(r"loss=([0-9.eE+-]+)")
STAGE_RE = re.compile(r"^stage: (\w+)")
CKPT_FILES = {
    "pytorch_lora_weights.safetensors",
    "optimizer.safetensors",
    "random_states.json",
    "sample.png",
    "trainer_state.json",
}


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["STCLOUD_TRAINER_STEP_DELAY"] = "0"  # full speed (the sample config paces itself for people)
    env.update(extra)
    return env


def run_trainer(*args: str, cwd: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stcloud.trainer", *map(str, args)],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class LiveRun:
    """A trainer subprocess whose stdout lines are collected by a thread."""

    def __init__(self, *args: str, cwd: Path, **env: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stcloud.trainer", *map(str, args)],
            cwd=cwd,
            env=_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None and not self._thread.is_alive():
                    raise AssertionError(f"line never appeared; got {self.lines[-5:]}")
                self._cond.wait(min(remaining, 0.2))

    def finish(self, timeout: float = 30) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._thread.join(timeout=5)
        return rc


def steps_of(stdout: str) -> list[tuple[int, int, float]]:
    out = []
    for line in stdout.splitlines():
        m = STEP_RE.match(line)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), float(LOSS_RE.search(line).group(1))))
    return out


def load_weights(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_weights(a), load_weights(b)
    assert sorted(wa) == sorted(wb)
    for key in wa:
        assert np.array_equal(wa[key], wb[key]), key


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    return ensure_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def config_path(sample, tmp_path_factory) -> Path:
    """The sample config with resume disabled (each test chooses)."""
    cfg = json.loads(Path(sample["config_path"]).read_text())
    cfg["resume_from_checkpoint"] = None
    cfg["checkpoints_total_limit"] = None
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def full_run(config_path, tmp_path_factory):
    """One uninterrupted 200-step run that several tests inspect."""
    work = tmp_path_factory.mktemp("full")
    t0 = time.monotonic()
    proc = run_trainer("--config", config_path, "--output-dir", work / "out", cwd=work)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    return {"proc": proc, "out": work / "out", "elapsed": elapsed}


# --------------------------------------------------------------------------- sample dataset


def test_sample_dataset_is_deterministic_and_idempotent(tmp_path):
    a = ensure_sample(tmp_path / "a")
    b = ensure_sample(tmp_path / "b")
    files_a = sorted(p.name for p in Path(a["dataset_dir"]).iterdir())
    files_b = sorted(p.name for p in Path(b["dataset_dir"]).iterdir())
    assert files_a == files_b
    assert len([f for f in files_a if f.endswith(".png")]) == NUM_IMAGES == a["num_images"]
    assert len([f for f in files_a if f.endswith(".txt")]) == NUM_IMAGES
    for name in files_a:
        assert (Path(a["dataset_dir"]) / name).read_bytes() == (Path(b["dataset_dir"]) / name).read_bytes()

    from PIL import Image

    with Image.open(Path(a["dataset_dir"]) / "sample_000.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    captions = {(Path(a["dataset_dir"]) / f).read_text().strip() for f in files_a if f.endswith(".txt")}
    assert len(captions) > NUM_IMAGES // 2 and all(captions)

    # second call: same result, nothing rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in Path(a["root"]).rglob("*")}
    again = ensure_sample(tmp_path / "a")
    assert again == a
    assert {p: p.stat().st_mtime_ns for p in Path(a["root"]).rglob("*")} == mtimes

    cfg = json.loads(Path(a["config_path"]).read_text())
    assert cfg["model_type"] == "lora"
    for key in ("max_train_steps", "checkpointing_steps", "learning_rate", "seed", "resolution", "lora_rank",
                "tracker_project_name"):
        assert key in cfg
    assert cfg["max_train_steps"] == 200 and cfg["checkpointing_steps"] == 50
    assert Path(cfg["data_backend_config"]) == Path(a["dataloader_path"])
    dl = json.loads(Path(a["dataloader_path"]).read_text())
    image_backend = [d for d in dl if d.get("dataset_type", "image") == "image"][0]
    assert image_backend["type"] == "local" and image_backend["caption_strategy"] == "textfile"
    assert Path(image_backend["instance_data_dir"]).is_absolute()
    assert Path(image_backend["instance_data_dir"]) == Path(a["dataset_dir"])


def test_sample_module_cli(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stcloud.trainer.sample", str(tmp_path / "s")],
        env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert Path(info["config_path"]).is_file() and Path(info["dataloader_path"]).is_file()
    assert "RuntimeWarning" not in proc.stderr


# --------------------------------------------------------------------------- a full run


def test_progress_lines_match_protocol(full_run):
    lines = full_run["proc"].stdout.splitlines()
    stages = [STAGE_RE.match(l).group(1) for l in lines if STAGE_RE.match(l)]
    assert stages == ["loading_dataset", "preparing", "training", "saving", "done"]
    steps = steps_of(full_run["proc"].stdout)
    assert steps[-1][:2] == (200, 200)
    assert all(total == 200 for _, total, _ in steps)
    numbers = [s for s, _, _ in steps]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert max(b - a for a, b in zip([0] + numbers, numbers, strict=False)) <= 10  # at least every 5%
    for line in lines:
        if line.startswith("step "):
            assert protocol.PROGRESS_RE.match(line), line
            assert re.fullmatch(r"step \d+/\d+ loss=\d+\.\d{6} lr=\d\.\d{2}e[+-]\d{2}", line), line
        parsed = protocol.parse_line(line)
        assert parsed is not None or line.startswith("note: "), line
    assert full_run["proc"].stderr == ""


def test_loss_falls(full_run):
    losses = [loss for _, _, loss in steps_of(full_run["proc"].stdout)]
    assert len(losses) == 200
    first, last = statistics.mean(losses[:10]), statistics.mean(losses[-10:])
    assert last < 0.6 * first, (first, last)
    summary = json.loads((full_run["out"] / "training_summary.json").read_text())
    hist = summary["loss_history"]
    assert len(hist) == 200
    assert statistics.mean(hist[-10:]) < 0.6 * statistics.mean(hist[:10])
    assert summary["steps"] == 200 and summary["final_loss"] == hist[-1]
    assert summary["duration_seconds"] > 0


def test_checkpoints_written_at_right_steps(full_run):
    out = full_run["out"]
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs == ["checkpoint-100", "checkpoint-150", "checkpoint-200", "checkpoint-50"]
    saved = [l.split(": ", 1)[1] for l in full_run["proc"].stdout.splitlines() if l.startswith("checkpoint saved: ")]
    assert saved == [str(out / f"checkpoint-{s}") for s in (50, 100, 150, 200)]
    for step in (50, 100, 150, 200):
        cp = out / f"checkpoint-{step}"
        assert {p.name for p in cp.iterdir()} == CKPT_FILES
        state = json.loads((cp / "trainer_state.json").read_text())
        assert state["global_step"] == step and len(state["loss_history"]) == step
        assert json.loads((cp / "random_states.json").read_text())["sampler"]["n"] == NUM_IMAGES
    # a checkpoint line is printed right after that step's progress line
    lines = full_run["proc"].stdout.splitlines()
    i = lines.index(f"checkpoint saved: {out / 'checkpoint-100'}")
    assert lines[i - 1].startswith("step 100/200 ")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_final_safetensors(full_run):
    path = full_run["out"] / "pytorch_lora_weights.safetensors"
    weights = load_weights(path)
    assert set(weights) == {"adapter.lora_A.weight", "adapter.lora_B.weight"}
    assert weights["adapter.lora_A.weight"].shape == (4, 32 * 32)
    assert weights["adapter.lora_B.weight"].shape == (32 * 32, 4)
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in weights.values())
    assert np.abs(weights["adapter.lora_B.weight"]).max() > 0  # B starts at zero: it trained
    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata()
    assert meta["format"] == "pt"
    assert meta["rank"] == meta["lora_rank"] == "4"
    assert meta["steps"] == "200" and meta["seed"] == "42"
    assert meta["resolution"] == "32"
    # the final weights equal the step-200 checkpoint's adapter
    assert_same_weights(path, full_run["out"] / "checkpoint-200" / "pytorch_lora_weights.safetensors")


def test_rerun_is_deterministic_and_seed_matters(full_run, config_path, tmp_path):
    proc = run_trainer("--config", config_path, "--output-dir", tmp_path / "again", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_same_weights(full_run["out"] / "pytorch_lora_weights.safetensors",
                        tmp_path / "again" / "pytorch_lora_weights.safetensors")
    assert steps_of(proc.stdout) == steps_of(full_run["proc"].stdout)

    cfg = json.loads(config_path.read_text())
    cfg.update(seed=7, max_train_steps=20, checkpointing_steps=0)
    (tmp_path / "seed7.json").write_text(json.dumps(cfg))
    proc = run_trainer("--config", tmp_path / "seed7.json", "--output-dir", tmp_path / "s7", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in (tmp_path / "s7").iterdir() if p.name.startswith("checkpoint-")]
    first20 = [s for s in steps_of(full_run["proc"].stdout) if s[0] <= 20]
    assert steps_of(proc.stdout) != first20


# --------------------------------------------------------------------------- resume


def test_resume_from_checkpoint_100_matches_uninterrupted(full_run, config_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(full_run["out"] / "checkpoint-100", out / "checkpoint-100")
    cfg = json.loads(config_path.read_text())
    cfg["resume_from_checkpoint"] = str(out / "checkpoint-100")
    (tmp_path / "resume.json").write_text(json.dumps(cfg))
    proc = run_trainer("--config", tmp_path / "resume.json", "--output-dir", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"resumed from checkpoint {out / 'checkpoint-100'} at step 100" in proc.stdout.splitlines()
    steps = steps_of(proc.stdout)
    assert steps[0][0] == 101 and steps[-1][0] == 200
    # identical losses for the resumed steps and bit-identical final weights
    assert steps == [s for s in steps_of(full_run["proc"].stdout) if s[0] > 100]
    assert_same_weights(out / "pytorch_lora_weights.safetensors",
                        full_run["out"] / "pytorch_lora_weights.safetensors")
    a = load_file(str(out / "checkpoint-200" / "optimizer.safetensors"))
    b = load_file(str(full_run["out"] / "checkpoint-200" / "optimizer.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    s1 = json.loads((out / "training_summary.json").read_text())
    s2 = json.loads((full_run["out"] / "training_summary.json").read_text())
    assert s1["loss_history"] == s2["loss_history"]
    assert s1["steps_this_run"] == 100

    # resuming a finished run is a no-op that still reports the last step
    proc = run_trainer("--config", config_path, "--output-dir", out, "--resume-from-checkpoint", "latest",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "at step 200" in proc.stdout and steps_of(proc.stdout)[-1][0] == 200


def test_sigkill_midway_then_resume_latest_matches(full_run, config_path, tmp_path):
    out = tmp_path / "out"
    cfg = json.loads(config_path.read_text())
    cfg["resume_from_checkpoint"] = "latest"
    cfg_path = tmp_path / "latest.json"
    cfg_path.write_text(json.dumps(cfg))

    run = LiveRun("--config", cfg_path, "--output-dir", out, cwd=tmp_path, STCLOUD_TRAINER_STEP_DELAY="0.02")
    run.wait_for(lambda l: l.startswith("checkpoint saved: ") and l.endswith("checkpoint-100"), timeout=30)
    run.wait_for(lambda l: l.startswith("step 110/"), timeout=30)
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    # normally 100; 150 only if this machine is very slow to deliver the kill
    latest = max(int(p.name.split("-")[1]) for p in out.iterdir() if p.name.startswith("checkpoint-"))
    assert latest in (100, 150)

    # debris a kill during a checkpoint write could leave behind: neither may be picked
    dead_pid = run.proc.pid
    half = out / f".tmp-checkpoint-150-{dead_pid}"
    half.mkdir()
    (half / "pytorch_lora_weights.safetensors").write_bytes(b"partial")
    incomplete = out / "checkpoint-199"
    incomplete.mkdir()
    (incomplete / "pytorch_lora_weights.safetensors").write_bytes(b"partial")

    proc = run_trainer("--config", cfg_path, "--output-dir", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"resumed from checkpoint {out / f'checkpoint-{latest}'} at step {latest}" in proc.stdout
    assert not half.exists()
    assert_same_weights(out / "pytorch_lora_weights.safetensors",
                        full_run["out"] / "pytorch_lora_weights.safetensors")


def test_latest_without_checkpoints_starts_fresh(config_path, tmp_path):
    cfg = json.loads(config_path.read_text())
    cfg.update(resume_from_checkpoint="latest", max_train_steps=10, checkpointing_steps=5,
               checkpoints_total_limit=1)
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    proc = run_trainer("--config", tmp_path / "c.json", "--output-dir", tmp_path / "o", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from checkpoint" not in proc.stdout
    assert steps_of(proc.stdout)[0][0] == 1
    # checkpoints_total_limit=1 keeps only the newest
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if p.is_dir()) == ["checkpoint-10"]


# --------------------------------------------------------------------------- signals


def test_sigterm_exits_promptly_without_partial_output(config_path, tmp_path):
    out = tmp_path / "out"
    run = LiveRun("--config", config_path, "--output-dir", out, cwd=tmp_path, STCLOUD_TRAINER_STEP_DELAY="0.2")
    run.wait_for(lambda l: l.startswith("step 3/"), timeout=30)
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    rc = run.finish(timeout=10)
    elapsed = time.monotonic() - t0
    assert rc == 143
    assert elapsed < 2.0, elapsed
    assert run.lines[-1] == "stage: cancelled"
    assert run.proc.stderr.read() == ""
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    assert not (out / "training_summary.json").exists()
    assert list(out.iterdir()) == []


def test_sigterm_with_checkpoint_on_cancel_saves_the_current_step(full_run, config_path, tmp_path):
    """The worker agent's cancel (e.g. a spending cap) keeps the progress: the trainer saves a
    checkpoint at the step it stopped at, and resuming from it ends bit-identical."""
    out = tmp_path / "out"
    cfg = json.loads(config_path.read_text())
    cfg["checkpoint_on_cancel"] = True
    cfg_path = tmp_path / "cancel.json"
    cfg_path.write_text(json.dumps(cfg))
    run = LiveRun("--config", cfg_path, "--output-dir", out, cwd=tmp_path, STCLOUD_TRAINER_STEP_DELAY="0.05")
    run.wait_for(lambda l: l.startswith("step 57/"), timeout=30)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish(timeout=10) == 143
    saved = [l for l in run.lines if l.startswith("checkpoint saved: ")]
    stopped_at = int(saved[-1].rsplit("checkpoint-", 1)[1])
    assert stopped_at >= 57 and stopped_at % 50 != 0 and saved[0].endswith("checkpoint-50")
    assert run.lines[-1] == "stage: cancelled"
    assert (out / f"checkpoint-{stopped_at}" / "trainer_state.json").exists()
    assert not (out / "pytorch_lora_weights.safetensors").exists()

    resumed = run_trainer("--config", config_path, "--output-dir", out, "--resume-from-checkpoint", "latest",
                          cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {stopped_at}" in resumed.stdout
    assert_same_weights(out / "pytorch_lora_weights.safetensors",
                        full_run["out"] / "pytorch_lora_weights.safetensors")


def test_checkpoint_on_cancel_must_be_boolean():
    with pytest.raises(Exception, match="checkpoint_on_cancel"):
        parse_config({"checkpoint_on_cancel": "yes"}, env={})


# --------------------------------------------------------------------------- bad input


def _write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


BAD_CASES = {
    "negative_steps": ({"max_train_steps": -1}, None, "max_train_steps"),
    "non_numeric_rank": ({"lora_rank": "abc"}, None, "lora_rank"),
    "zero_lr": ({"learning_rate": 0}, None, "learning_rate"),
    "bool_batch": ({"train_batch_size": True}, None, "train_batch_size"),
    "unknown_scheduler": ({"lr_scheduler": "wobbly"}, None, "lr_scheduler"),
    "huge_resolution_rgb": ({"image_channels": 3, "reference_max_resolution": 64, "resolution": 64}, None, "features"),
    "bad_json": ("{nope", None, "not valid JSON"),
    "config_not_object": ([1, 2], None, "JSON object"),
    "missing_dataset_dir": ({}, [{"id": "x", "type": "local", "instance_data_dir": "missing"}], "not found"),
    "no_images": ({}, [{"id": "x", "type": "local", "instance_data_dir": "empty"}], "no images found"),
    "unsupported_backend": ({}, [{"id": "x", "type": "aws", "aws_bucket_name": "b"}], "aws"),
    "no_dataloader": ({}, "omit", "no dataloader"),
    "resume_missing": ({"resume_from_checkpoint": "checkpoint-999"}, None, "resume_from_checkpoint"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_exits_2_with_one_line(case, sample, tmp_path):
    config, dataloader, expected = BAD_CASES[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    args = ["--config", _write(tmp_path / "config.json", config)]
    if dataloader is None:
        args += ["--dataloader", sample["dataloader_path"]]
    elif dataloader != "omit":
        args += ["--dataloader", _write(tmp_path / "dl.json", dataloader)]
    proc = run_trainer(*args, "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err_lines = proc.stderr.splitlines()
    assert len(err_lines) == 1, proc.stderr
    assert err_lines[0].startswith("error: ") and expected in err_lines[0], err_lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_config_file_and_bad_flag(tmp_path):
    for args in (["--config", "nope.json"], ["--bogus"]):
        proc = run_trainer(*args, cwd=tmp_path)
        assert proc.returncode == 2
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")


# --------------------------------------------------------------------------- paths & config parsing


def test_relative_paths_and_simpletuner_style_keys(sample, tmp_path):
    """instance_data_dir resolves against the dataloader file; data_backend_config against the config."""
    proj = tmp_path / "proj"
    shutil.copytree(sample["dataset_dir"], proj / "data" / "images")
    _write(proj / "data" / "dataloader.json", [
        {"id": "imgs", "type": "local", "instance_data_dir": "images", "caption_strategy": "textfile"},
        {"id": "te", "type": "local", "dataset_type": "text_embeds", "cache_dir": "x"},
    ])
    _write(proj / "config.json", {
        "--max_train_steps": "12", "--checkpointing_steps": 6, "--learning_rate": "3e-3",
        "--data_backend_config": "data/dataloader.json", "--output_dir": "run-out",
        "--lr_scheduler": "cosine", "--lr_warmup_steps": 2, "some_unknown_key": {"x": 1},
    })
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = run_trainer("--config", proj / "config.json", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    out = elsewhere / "run-out"  # output_dir is relative to the working directory
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-12", "checkpoint-6"]
    steps = steps_of(proc.stdout)
    assert steps[-1][:2] == (12, 12)
    lrs = [float(protocol.LR_RE.search(l).group(1)) for l in proc.stdout.splitlines() if l.startswith("step ")]
    assert lrs[0] == pytest.approx(1.5e-3) and lrs[-1] == 0.0


def test_parse_config_unit():
    cfg = parse_config({})
    assert (cfg.max_train_steps, cfg.checkpointing_steps, cfg.seed, cfg.resolution, cfg.lora_rank) == (200, 50, 42, 32, 4)
    assert cfg.output_dir == "output" and cfg.resume_from_checkpoint is None
    cfg = parse_config({"--max_train_steps": "300", "lora_rank": 8.0, "resume_from_checkpoint": "latest",
                        "checkpoints_total_limit": None, "resolution": 1024, "seed": None})
    assert cfg.max_train_steps == 300 and cfg.lora_rank == 8 and cfg.resume_from_checkpoint == "latest"
    assert cfg.work_resolution == 32 and cfg.seed == 42
    assert parse_config({"step_delay_seconds": 0.5}, env={"STCLOUD_TRAINER_STEP_DELAY": "0.25"}).step_delay_seconds == 0.25
    for bad in ({"checkpointing_steps": -5}, {"seed": -1}, {"lora_rank": 0}, {"learning_rate": "fast"},
                {"learning_rate": float("nan")}, {"image_channels": 2}):
        with pytest.raises(TrainerError):
            parse_config(bad)
    cos = parse_config({"lr_scheduler": "cosine", "lr_warmup_steps": 10, "max_train_steps": 110, "learning_rate": 1.0})
    assert learning_rate_at(cos, 5) == 0.5 and learning_rate_at(cos, 10) == 1.0
    assert learning_rate_at(cos, 60) == pytest.approx(0.5) and learning_rate_at(cos, 110) == pytest.approx(0.0)


def test_protocol_parse_line():
    assert protocol.parse_line("step 40/200 loss=0.031234 lr=1.00e-03") == {
        "kind": "progress", "step": 40, "total": 200, "loss": 0.031234, "lr": 1e-3}
    assert protocol.parse_line("stage: training") == {"kind": "stage", "stage": "training"}
    assert protocol.parse_line("checkpoint saved: /x/checkpoint-50\n") == {"kind": "checkpoint", "path": "/x/checkpoint-50"}
    assert protocol.parse_line("resumed from checkpoint /x/checkpoint-100 at step 100") == {
        "kind": "resumed", "path": "/x/checkpoint-100", "step": 100}
    assert protocol.parse_line("note: hello") is None
    assert protocol.format_progress(40, 200, 0.0312341, 1e-3) == "step 40/200 loss=0.031234 lr=1.00e-03"


def test_sample_run_is_fast(full_run):
    # 200 steps on the sample dataset, including interpreter start-up and 4 checkpoints
    assert full_run["elapsed"] < 15, full_run["elapsed"]
