"""Progress from SimpleTuner-style log lines. Pure.

Understands ``step 120/2000``, ``Steps: 6%|... | 120/2000``, ``loss=0.1234`` /
``loss: 0.1234``, ``stage: training`` and ``resumed from checkpoint ... at step N``.

The job row's ``progress`` holds only scalars (``step``, ``total_steps``, ``loss``,
``best_loss``, ``stage``, ``resumes``); the loss history (``[step, loss]`` points) goes to
its own table (``jobs/loss_points.py``), so a log line does not rewrite the whole history.
"""
from __future__ import annotations

import re
from typing import NamedTuple

STEP_RE = re.compile(r"\bsteps?[ :]+(\d+)\s*/\s*(\d+)", re.IGNORECASE)
TQDM_RE = re.compile(r"\|\s*(\d+)\s*/\s*(\d+)\s*\[")
LOSS_RE = re.compile(r"\bloss\s*[=:]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
STAGE_RE = re.compile(r"^\s*stage:\s*([A-Za-z_][\w-]*)", re.IGNORECASE)
RESUME_RE = re.compile(r"resumed from checkpoint\s+(\S+)\s+at step\s+(\d+)", re.IGNORECASE)


class Folded(NamedTuple):
    progress: dict  # the new progress (scalars)
    points: list[tuple[int, float]]  # new loss history points, oldest first


def parse(text: str, progress: dict | None) -> Folded | None:
    """Fold ``text`` (new log lines) into ``progress``; None if nothing changed."""
    cur = dict(progress or {})
    points: list[tuple[int, float]] = []
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
                best = cur.get("best_loss")
                if best is None or loss < best:
                    cur["best_loss"] = loss
                changed = True
                if step is not None:
                    points.append((step, loss))
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
    return Folded(cur, points) if changed else None


def percent(progress: dict | None) -> float | None:
    if not progress or not progress.get("total_steps"):
        return None
    return round(100.0 * progress.get("step", 0) / progress["total_steps"], 1)
