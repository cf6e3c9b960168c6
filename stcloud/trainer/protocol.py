"""The stdout line protocol spoken by the reference trainer.

Every line is printed on its own and flushed immediately, so a parent process
(the local runner, a self-hosted worker, a cloud log tail) can parse progress
line by line. The shapes deliberately mirror SimpleTuner's console output:

    stage: loading_dataset
    stage: preparing
    resumed from checkpoint /abs/out/checkpoint-100 at step 100
    stage: training
    step 40/200 loss=0.031234 lr=1.00e-03
    checkpoint saved: /abs/out/checkpoint-50
    stage: saving
    stage: done

``stage: cancelled`` is printed when SIGTERM/SIGINT stops a run. Errors go to
stderr as a single ``error: ...`` line. Other informational lines (``note: ...``)
may appear on stdout and match none of the regexes below.

This module has no third-party imports so servers can use it cheaply.
"""

from __future__ import annotations

import re
from typing import Any

STAGES = ("loading_dataset", "preparing", "training", "saving", "done", "cancelled")

STAGE_RE = re.compile(r"^stage: (\w+)\s*$")
STEP_RE = re.compile(r"^step (\d+)/(\d+)")
LOSS_RE = re.compile(r"loss=([0-9.eE+-]+)")
LR_RE = re.compile(r"lr=([0-9.eE+-]+)")
PROGRESS_RE = re.compile(r"^step (\d+)/(\d+) loss=([0-9.eE+-]+) lr=([0-9.eE+-]+)\s*$")
CHECKPOINT_RE = re.compile(r"^checkpoint saved: (.+?)\s*$")
RESUMED_RE = re.compile(r"^resumed from checkpoint (.+) at step (\d+)\s*$")
ERROR_RE = re.compile(r"^error: (.*)$")


def format_stage(name: str) -> str:
    return f"stage: {name}"


def format_progress(step: int, total: int, loss: float, lr: float) -> str:
    return f"step {step}/{total} loss={loss:.6f} lr={lr:.2e}"


def format_checkpoint(path: str) -> str:
    return f"checkpoint saved: {path}"


def format_resumed(path: str, step: int) -> str:
    return f"resumed from checkpoint {path} at step {step}"


def parse_line(line: str) -> dict[str, Any] | None:
    """Classify one output line; returns None for lines outside the protocol."""
    line = line.rstrip("\r\n")
    m = PROGRESS_RE.match(line)
    if m:
        return {
            "kind": "progress",
            "step": int(m.group(1)),
            "total": int(m.group(2)),
            "loss": float(m.group(3)),
            "lr": float(m.group(4)),
        }
    m = STAGE_RE.match(line)
    if m:
        return {"kind": "stage", "stage": m.group(1)}
    m = CHECKPOINT_RE.match(line)
    if m:
        return {"kind": "checkpoint", "path": m.group(1)}
    m = RESUMED_RE.match(line)
    if m:
        return {"kind": "resumed", "path": m.group(1), "step": int(m.group(2))}
    m = ERROR_RE.match(line)
    if m:
        return {"kind": "error", "message": m.group(1)}
    return None
