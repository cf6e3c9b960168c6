"""The pipeline input ``resume_from_checkpoint: {from: <job>}``: the child starts from the
parent's newest uploaded checkpoint, through the machinery of resume anywhere.

The released body gets ``resume_of: {job: <parent>, step: <n>}`` (``stcloud.jobs.resume_links``),
so the child joins the parent's chain of attempts; on workers and Slurm the checkpoint is
copied under the child's own prefix and its agent unpacks it and points the trainer at it;
a cloud provider gets ``resume_from_checkpoint`` as a presigned URL of a zip of the folder
(``stcloud.jobs.resume.checkpoint_url``: it needs a public URL). The child's own
``max_train_steps`` is the step it trains up to, so it must lie past the checkpoint.
"""
from __future__ import annotations

from stcloud.costs import estimates as est_mod
from stcloud.errors import ValidationError
from stcloud.jobs import checkpoints
from stcloud.jobs.resume import checkpoint_url
from stcloud.providers import registry

NAME = "resume_from_checkpoint"


def apply(body: dict, parent_id: str) -> dict:
    """``body`` (the child's submit body, its provider decided) made to resume from the newest
    checkpoint of ``parent_id``. Raises ValidationError (no checkpoint, nothing left to train)
    or BadRequest (a cloud provider without a public URL)."""
    ck = checkpoints.latest(parent_id)
    if ck is None:
        raise ValidationError(f"inputs.{NAME}: job {parent_id} has no uploaded checkpoint to start from "
                              "(set checkpointing_steps on it)", extra={"field": "inputs"})
    config = dict(body.get("config") or {})
    total = est_mod.steps_of(config)
    if total and total <= ck.step:
        raise ValidationError(f"inputs.{NAME}: the checkpoint of {parent_id} is at step {ck.step}; this job's "
                              f"max_train_steps ({total}) leaves nothing to train", extra={"field": "inputs"})
    if registry.get(body["provider"]).uploads_data:
        config[NAME] = checkpoint_url(parent_id, ck.step)
    else:
        config.pop(NAME, None)  # the agent points the trainer at the copied checkpoint
    return {**body, "config": config, "resume_of": {"job": parent_id, "step": ck.step}}
