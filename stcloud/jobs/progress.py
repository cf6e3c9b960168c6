"""Progress from SimpleTuner-style log lines. Pure.

Understands ``step 120/2000``, ``Steps: 6%|... | 120/2000``, ``loss=0.1234`` /
``loss: 0.1234``, ``stage: training`` and ``resumed from checkpoint ... at step N``.
"""
from __future__ import annotations

import re

STEP_RE = re.compile(r"\bsteps?[ :]+(\d+)\s*/\s*(\d+)", re.IGNORECASE)
TQDM_RE = re.compile(r"\|\s*(\d+)\s*/\s*(\d+)\s*\[")
LOSS_RE = re.compile(r"\bloss\s*[=:]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
STAGE_RE = re.compile(r"^\s*stage:\s*([A-Za-z_][\w-]*)", re.IGNORECASE)
RESUME_RE = re.compile(r"resumed from checkpoint\s+(\S+)\s+at step\s+(\d+)", re.IGNORECASE)
MAX_LOSS_POINTS = 400


def parse(text: str, progress: dict | None) -> dict | None:
    """Fold ``text`` (new log lines) into ``progress``; returns a new dict or None if unchanged."""
    cur = dict(progress or {})
    losses = list(cur.get("losses") or [])
    changed = False
    for line in text.splitlines():
        m = STEP_RE.search(line) or TQDM_RE.search(line)
        step = None
        if m:
            step, total = int(m.group(1)), int(m.group(2))
            if total > 0 and step <= total:
                cur["step"], cur["total_steps"] = step, total
                changed = True
            else:
                step = None
        lm = LOSS_RE.search(line)
        if lm:
            try:
                loss = float(lm.group(1))
            except ValueError:
                loss = None
            if loss is not None and loss == loss:  # not NaN
                cur["loss"] = loss
                changed = True
                if step is not None:
                    losses.append([step, loss])
        sm = STAGE_RE.search(line)
        if sm:
            cur["stage"] = sm.group(1).lower()
            changed = True
        rm = RESUME_RE.search(line)
        if rm:
            resumes = list(cur.get("resumes") or [])
            resumes.append({"checkpoint": rm.group(1), "step": int(rm.group(2))})
            cur["resumes"] = resumes
            changed = True
    if not changed:
        return None
    while len(losses) > MAX_LOSS_POINTS:
        # Thin the older half so the chart keeps its shape and the newest points.
        half = len(losses) // 2
        losses = losses[:half:2] + losses[half:]
    cur["losses"] = losses
    return cur


def percent(progress: dict | None) -> float | None:
    if not progress or not progress.get("total_steps"):
        return None
    return round(100.0 * progress.get("step", 0) / progress["total_steps"], 1)
