"""Config snapshots in git. FIRST VERSION (foundation): not set up yet; the snapshot issue
replaces the body. Contract: never raises; returns (commit sha or None, error or None)."""
from __future__ import annotations


def snapshot_for_submit(home: str, name: str, config: dict, dataloader_config: list,
                        job_id: str, message: str | None = None) -> tuple[str | None, str | None]:
    return None, None
