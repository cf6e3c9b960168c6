"""stcloud reference trainer: a small, real LoRA trainer that runs anywhere (numpy, CPU).

It gives the dashboard, the self-hosted worker and the tests a genuine training
job (the loss really falls, checkpoints really resume) without a GPU. The model
is described in :mod:`stcloud.trainer.core`.

CLI
---
::

    python -m stcloud.trainer --config config.json [--dataloader dataloader.json]
                              [--output-dir DIR] [--resume-from-checkpoint latest|PATH|none]

Exit codes: 0 done; 2 bad input (config, dataloader, dataset, checkpoint: one
``error: ...`` line on stderr, no traceback); 143 SIGTERM (130 SIGINT);
1 internal bug (traceback, then an ``error: internal error: ...`` last line).

Config keys (JSON object; SimpleTuner names; CLI-style keys such as
``"--learning_rate"`` are accepted too; numeric strings are coerced; unknown
keys are ignored)
    ``max_train_steps`` (200), ``checkpointing_steps`` (50; 0/null = none),
    ``learning_rate`` (1e-3), ``seed`` (42), ``resolution`` (32 px; trained at
    ``min(resolution, reference_max_resolution)``; ``resolution_type: "area"``
    means megapixels), ``lora_rank`` (4), ``lora_alpha`` (= rank),
    ``train_batch_size`` (4), ``output_dir`` ("output", relative to the CWD;
    ``--output-dir`` wins), ``resume_from_checkpoint`` (null | "latest" | path
    or checkpoint name inside output_dir), ``checkpoints_total_limit`` (null =
    keep all), ``lr_scheduler`` (constant | constant_with_warmup | linear |
    cosine), ``lr_warmup_steps`` (0), ``adam_beta1/2``, ``adam_epsilon``,
    ``adam_weight_decay`` (0), ``max_grad_norm`` (off), ``logging_steps``
    (default: every step up to 200 steps, always at least every 5% and the
    last step), ``data_backend_config`` (dataloader path used when
    ``--dataloader`` is omitted; relative paths resolve against the config
    file's directory).
    Reference-trainer extras: ``step_delay_seconds`` (0; env var
    ``STCLOUD_TRAINER_STEP_DELAY`` overrides it; sleeps after each step so
    tests can watch a slow job), ``noise_std`` (0.1), ``image_channels`` (1
    grayscale | 3 RGB), ``reference_max_resolution`` (32, max 64),
    ``base_model_seed`` (0). ``resolution**2 * image_channels`` must be <= 4096.

Dataloader: a SimpleTuner list of backends. Entries with ``type: "local"`` and
``dataset_type`` "image" (default) are used; ``text_embeds``/``image_embeds``
entries and ``disabled: true`` entries are skipped; other ``type`` values are
an error. ``instance_data_dir`` is scanned recursively for .jpg/.jpeg/.png/
.webp; **a relative instance_data_dir resolves against the dataloader file's
directory**. ``caption_strategy``: textfile (same-stem .txt, falling back to the
filename), filename, instanceprompt (``instance_prompt``). ``repeats`` adds
extra copies of each image.

Output lines (stdout, one per line, flushed; see :mod:`.protocol`)::

    stage: loading_dataset | preparing | training | saving | done | cancelled
    step 40/200 loss=0.031234 lr=1.00e-03
    checkpoint saved: /abs/output/checkpoint-50
    resumed from checkpoint /abs/output/checkpoint-100 at step 100
    note: ...            (informational; matches none of the regexes)

Output layout::

    <output_dir>/checkpoint-<step>/pytorch_lora_weights.safetensors  float32 adapter
                                   optimizer.safetensors     float64 master params + AdamW moments
                                   random_states.json        sampler/noise PCG64 states, epoch permutation
                                   sample.png                 the adapter at work on fixed probes (see .samples)
                                   trainer_state.json        step, loss_history, config facts (written last)
    <output_dir>/pytorch_lora_weights.safetensors   keys adapter.lora_A.weight (r x D),
                                                    adapter.lora_B.weight (D x r); metadata format=pt,
                                                    rank/lora_rank, lora_alpha, steps, seed, resolution ...
    <output_dir>/training_summary.json              final_loss, steps, duration_seconds, loss_history ...

Checkpoints are built in ``.tmp-checkpoint-<step>-<pid>/`` and renamed into
place, so a SIGKILL never leaves a half checkpoint that "latest" could pick
("latest" also ignores dirs without trainer_state.json; stale temp dirs of dead
processes are removed on the next start). Resuming restores params, optimizer
moments and RNG states, so the final weights are bit-identical to an
uninterrupted run with the same config.

SIGTERM/SIGINT: the current step (or checkpoint write) finishes, nothing new is
saved, ``stage: cancelled`` is printed and the process exits 143/130. Work since
the last periodic checkpoint is lost by design: a cancel checkpoint at an odd
step would break the "checkpoints at multiples of checkpointing_steps" contract
and the retention limit.

Sample data: :func:`stcloud.trainer.sample.ensure_sample` /
``python -m stcloud.trainer.sample DEST``.
"""

from __future__ import annotations

from typing import Any

from .protocol import (  # noqa: F401  (cheap, no numpy)
    CHECKPOINT_RE,
    LOSS_RE,
    PROGRESS_RE,
    RESUMED_RE,
    STAGE_RE,
    STAGES,
    STEP_RE,
    parse_line,
)

__all__ = [
    "CHECKPOINT_RE",
    "LOSS_RE",
    "PROGRESS_RE",
    "RESUMED_RE",
    "STAGE_RE",
    "STAGES",
    "STEP_RE",
    "parse_line",
    "ensure_sample",
    "find_latest_checkpoint",
    "main",
    "TrainerError",
]


def __getattr__(name: str) -> Any:
    # Lazy so that importing the package (e.g. for the regexes) does not pull in
    # numpy, and ``python -m stcloud.trainer.sample`` does not double-import.
    if name == "ensure_sample":
        from .sample import ensure_sample

        return ensure_sample
    if name in ("find_latest_checkpoint", "main", "TrainerError", "parse_config", "TrainConfig"):
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
