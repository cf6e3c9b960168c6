"""A job's checkpoints and sample images, read from the built-in S3 endpoint.

Two layouts arrive under ``outputs/<job_id>/`` and both are recognised:

- the worker agent (and the Slurm agent) uploads each checkpoint to
  ``checkpoints/checkpoint-<step>/…``; the reference trainer puts a ``sample.png`` rendered
  from the adapter in each (``stcloud.trainer.samples``);
- SimpleTuner's publishing (Replicate) pushes a folder by its base name, so a checkpoint
  lands at ``[<base>/]checkpoint-<step>/…`` and the run's ``output_dir`` at ``<base>/…`` with
  its validation images in ``validation_images/`` (named ``step_<step>_<prompt>_<res>.png``;
  the step is read from ``step_<n>``, else the first number of the name).

Images inside a checkpoint and validation images of the same step make the gallery of that
step. Nothing here trusts a name from the request: every file is looked up in the listing.
"""
from __future__ import annotations

import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import quote

from stcloud.errors import NotFound
from stcloud.storage import service as storage_service
from stcloud.storage.errors import S3Error

BUCKET = storage_service.JOB_BUCKET
MAX_OBJECTS = 20000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_CHECKPOINT = re.compile(r"(?:^|/)checkpoint-(\d+)/(.+)$")
_VALIDATION = re.compile(r"(?:^|/)validation_images/(.+)$")
_STEP_IN_NAME = re.compile(r"step[_-]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")
COMPLETE_MARKERS = ("trainer_state.json",)  # the reference trainer writes it last


@dataclass
class Checkpoint:
    step: int
    prefix: str = ""  # the object prefix of the checkpoint folder (ends with "/"); "" = samples only
    files: list[dict] = field(default_factory=list)  # {name, key, size}
    samples: list[dict] = field(default_factory=list)  # {name, key, size, source}

    @property
    def downloadable(self) -> bool:
        return bool(self.files)

    @property
    def complete(self) -> bool:
        names = {f["name"] for f in self.files}
        return any(m in names for m in COMPLETE_MARKERS) or bool(self.files)

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.files)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _step_of_image(name: str) -> int | None:
    base = name.rsplit("/", 1)[-1]
    m = _STEP_IN_NAME.search(base) or _NUMBER.search(base)
    return int(m.group(1)) if m else None


def scan(job_id: str) -> list[Checkpoint]:
    """Checkpoints and samples of ``job_id``, oldest step first. Reads the store, not the
    database: call it with a job the caller may see."""
    b = storage_service.backend()
    prefix = f"{job_id}/"
    if not b.bucket_exists(BUCKET):
        return []
    by_step: dict[int, Checkpoint] = {}
    seen = 0
    for key, _path, st in b.iter_keys(BUCKET, prefix=prefix):
        seen += 1
        if seen > MAX_OBJECTS:
            break
        if key.endswith("/"):
            continue
        rel = key[len(prefix):]
        m = _CHECKPOINT.search(rel)
        if m:
            step, name = int(m.group(1)), m.group(2)
            ck = by_step.setdefault(step, Checkpoint(step))
            folder = prefix + rel[:m.start(2)]
            if ck.prefix and ck.prefix != folder:
                continue  # the same step pushed twice under two names: the first one wins
            ck.prefix = folder
            entry = {"name": name, "key": key, "size": int(st.st_size)}
            ck.files.append(entry)
            if _is_image(name):
                ck.samples.append({**entry, "source": "checkpoint"})
            continue
        v = _VALIDATION.search(rel)
        if v and _is_image(v.group(1)):
            step = _step_of_image(v.group(1))
            if step is not None:
                by_step.setdefault(step, Checkpoint(step)).samples.append(
                    {"name": v.group(1), "key": key, "size": int(st.st_size), "source": "validation"})
    return [by_step[k] for k in sorted(by_step)]


def find(job_id: str, step: int) -> Checkpoint:
    """The checkpoint of ``job_id`` at ``step``. Raises NotFound."""
    for ck in scan(job_id):
        if ck.step == step and (ck.files or ck.samples):
            return ck
    raise NotFound(f"job {job_id} has no checkpoint at step {step}")


def latest(job_id: str) -> Checkpoint | None:
    """The newest checkpoint that holds files (samples alone cannot be resumed from)."""
    usable = [ck for ck in scan(job_id) if ck.downloadable]
    return usable[-1] if usable else None


def file_url(job_id: str, step: int, name: str) -> str:
    return f"/api/cloud/jobs/{job_id}/checkpoints/{step}/files/{quote(name, safe='/')}"


def download_url(job_id: str, step: int) -> str:
    return f"/api/cloud/jobs/{job_id}/checkpoints/{step}/download"


def to_dict(job_id: str, ck: Checkpoint) -> dict:
    return {
        "step": ck.step,
        "prefix": ck.prefix or None,
        "size": ck.size,
        "downloadable": ck.downloadable,
        "download_url": download_url(job_id, ck.step) if ck.downloadable else None,
        "files": [{"name": f["name"], "size": f["size"], "download_url": file_url(job_id, ck.step, f["name"])}
                  for f in ck.files],
        "samples": [{"name": smp["name"], "size": smp["size"], "source": smp["source"],
                     "url": file_url(job_id, ck.step, _sample_name(smp))} for smp in ck.samples],
    }


def _sample_name(sample: dict) -> str:
    """Validation images live outside the checkpoint folder: addressed as ``validation_images/<name>``."""
    return sample["name"] if sample["source"] == "checkpoint" else f"validation_images/{sample['name']}"


def open_file(job_id: str, step: int, name: str):
    """``(ObjectInfo, file)`` of one file of a checkpoint (or one of its validation images).
    Raises NotFound."""
    ck = find(job_id, step)
    keys = {f["name"]: f["key"] for f in ck.files}
    keys.update({_sample_name(smp): smp["key"] for smp in ck.samples})
    key = keys.get(name)
    if key is None:
        raise NotFound(f"checkpoint {step} of job {job_id} has no file {name!r}")
    try:
        return storage_service.backend().open(BUCKET, key)
    except S3Error:
        raise NotFound(f"checkpoint {step} of job {job_id}: {name!r} is no longer stored") from None


def build_zip(job_id: str, step: int, dest_dir: str | None = None):
    """A zip of the checkpoint folder (entries ``checkpoint-<step>/<name>``) in a temporary
    file, rewound; the caller closes it (it is deleted then). Raises NotFound."""
    ck = find(job_id, step)
    if not ck.files:
        raise NotFound(f"the checkpoint at step {step} of job {job_id} holds no files (samples only)")
    out = tempfile.TemporaryFile(dir=dest_dir)
    b = storage_service.backend()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for f in ck.files:
            name = PurePosixPath(f"checkpoint-{step}") / f["name"]
            try:
                _info, fh = b.open(BUCKET, f["key"])
            except S3Error:
                out.close()
                raise NotFound(f"the checkpoint at step {step} of job {job_id} is no longer stored whole") from None
            with fh, zf.open(str(name), "w", force_zip64=True) as target:
                while chunk := fh.read(1 << 20):
                    target.write(chunk)
    out.seek(0)
    return out
