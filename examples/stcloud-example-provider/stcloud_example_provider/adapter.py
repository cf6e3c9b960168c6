"""The adapter: no Flask, no database. Its "remote side" is a directory: ``run_job`` copies
the dataset archive there (the upload) and writes the job's record; the simulated run is a
pure function of that record and the clock, so any adapter instance — a new one is built for
every call — answers ``get_job_status`` and ``get_job_logs`` alike."""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stcloud.providers.base import (
    CloudJobInfo,
    CloudJobStatus,
    CloudTrainerService,
    HardwareProfile,
    ProviderFailure,
    RunRequest,
    SettingField,
)

DEFAULT_STEPS = 20


class ExampleProvider(CloudTrainerService):
    def __init__(self, state_dir: str, *, seconds_per_step: float = 0.05, usd_per_hour: float = 1.80,
                 api_key: str | None = None, clock: Callable[[], float] = time.time):
        self.state_dir = Path(state_dir)
        self.seconds_per_step = float(seconds_per_step)
        self.usd_per_hour = float(usd_per_hour)
        self.api_key = api_key
        self._clock = clock

    # ---- the seeds' nine members -----------------------------------------------------------

    provider_name = "example"
    supports_cost_tracking = True  # it reports cost_usd itself
    supports_live_logs = True

    def validate_credentials(self) -> dict[str, Any]:
        if not self.api_key:
            raise ProviderFailure("example provider: no api_key set", http_status=400)
        return {"username": "example-user", "key_suffix": self.api_key[-4:]}

    def list_jobs(self, limit: int = 50) -> list[CloudJobInfo]:
        records = sorted(self.state_dir.glob("ex_*.json"), key=os.path.getmtime, reverse=True)
        return [self.get_job_status(p.stem) for p in records[:limit]]

    def run_job(self, request: RunRequest) -> CloudJobInfo:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        remote_id = "ex_" + uuid.uuid4().hex[:12]
        uploaded = None
        if request.archive_path:
            uploaded = self.state_dir / f"{remote_id}.zip"
            shutil.copyfile(request.archive_path, uploaded)  # the "upload"
        steps = int((request.config or {}).get("max_train_steps") or DEFAULT_STEPS)
        record = {"job_id": request.job_id, "started": self._clock(), "steps": max(1, steps),
                  "seconds_per_step": self.seconds_per_step, "usd_per_hour": self.usd_per_hour,
                  "hardware": request.hardware, "archive_bytes": uploaded.stat().st_size if uploaded else 0,
                  "cancelled_at": None}
        self._write(remote_id, record)
        return self.get_job_status(remote_id)

    def cancel_job(self, provider_job_id: str) -> bool:
        record = self._read(provider_job_id)
        if record is None:
            return False
        if record["cancelled_at"] is None:
            record["cancelled_at"] = self._clock()
            self._write(provider_job_id, record)
        return True

    def get_job_logs(self, provider_job_id: str) -> str:
        return self._simulate(provider_job_id)["logs"]

    def get_job_status(self, provider_job_id: str) -> CloudJobInfo:
        sim = self._simulate(provider_job_id)
        return CloudJobInfo(provider_job_id=provider_job_id, status=sim["status"], raw_status=sim["status"].value,
                            logs=sim["logs"], cost_usd=sim["cost_usd"], progress=sim["progress"],
                            outputs=sim["outputs"], extra={"example_archive_bytes": sim["archive_bytes"]})

    # ---- capabilities and settings ---------------------------------------------------------

    @property
    def label(self) -> str:
        return "Example provider"

    @property
    def description(self) -> str:
        return "Simulated training from the stcloud-example-provider package (no GPU, no account)."

    @property
    def max_upload_bytes(self) -> int | None:
        return 50 * 1024 * 1024

    def poll_interval(self, status: str) -> float | None:
        return 1.0

    def hardware_profiles(self) -> list[HardwareProfile]:
        return [HardwareProfile("sim-small", "Simulated GPU", self.usd_per_hour, 1, 24, "example price")]

    def settings_fields(self) -> tuple[SettingField, ...]:
        return (
            SettingField("seconds_per_step", "Seconds per simulated step", "number", default=0.05,
                         minimum=0.001, maximum=60),
            SettingField("usd_per_hour", "Price (USD per hour)", "number", default=1.80, minimum=0),
            SettingField("api_key", "API key", "secret", help="any value; validate_credentials shows its end"),
        )

    # ---- the simulation ----------------------------------------------------------------------

    def _path(self, remote_id: str) -> Path:
        if not remote_id.startswith("ex_") or not remote_id[3:].isalnum():
            raise ProviderFailure(f"example provider: bad job id {remote_id!r}", http_status=404)
        return self.state_dir / f"{remote_id}.json"

    def _read(self, remote_id: str) -> dict | None:
        path = self._path(remote_id)
        return json.loads(path.read_text()) if path.exists() else None

    def _write(self, remote_id: str, record: dict) -> None:
        tmp = self._path(remote_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self._path(remote_id))

    def _simulate(self, remote_id: str) -> dict:
        record = self._read(remote_id)
        if record is None:
            raise ProviderFailure(f"example provider: no job {remote_id}", http_status=404)
        now = record["cancelled_at"] or self._clock()
        elapsed = max(0.0, now - record["started"])
        total = record["steps"]
        step = min(total, int(elapsed / record["seconds_per_step"]))
        lines = ["stage: training"] + [f"step {i}/{total} loss={1.0 / (i + 1):.4f}" for i in range(1, step + 1)]
        if record["cancelled_at"] is not None:
            status = CloudJobStatus.CANCELLED
        elif step >= total:
            status = CloudJobStatus.COMPLETED
            lines.append("stage: done")
        else:
            status = CloudJobStatus.RUNNING
        run_seconds = min(elapsed, total * record["seconds_per_step"])
        return {
            "status": status,
            "logs": "\n".join(lines) + "\n",
            "cost_usd": round(run_seconds * record["usd_per_hour"] / 3600.0, 8),
            "progress": {"step": step, "total_steps": total},
            "outputs": ([{"name": "pytorch_lora_weights.safetensors", "url": f"example://{remote_id}/weights",
                          "destination": "example"}] if status == CloudJobStatus.COMPLETED else None),
            "archive_bytes": record["archive_bytes"],
        }
