"""GPU detection for the agent: ``nvidia-smi`` when present, else no GPU. No Flask, no db."""
from __future__ import annotations

import shutil
import subprocess

QUERY = ["--query-gpu=name,memory.total", "--format=csv,noheader"]


def parse_nvidia_smi(text: str) -> list[dict]:
    """``"NVIDIA A100-SXM4-80GB, 81920 MiB"`` lines -> ``[{"name", "memory_gb"}]``."""
    gpus = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        name, _, mem = line.rpartition(",")
        if not name:
            continue
        mem = mem.strip()
        parts = mem.split()
        try:
            value = float(parts[0])
        except (IndexError, ValueError):
            continue
        unit = parts[1].lower() if len(parts) > 1 else "mib"
        gb = value / 1024 if unit.startswith("mi") or unit == "mb" else value
        gpus.append({"name": name.strip(), "memory_gb": round(gb, 1)})
    return gpus


def detect(timeout: float = 10.0) -> list[dict]:
    """The GPUs of this machine (empty when there is no NVIDIA driver)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, *QUERY], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return parse_nvidia_smi(out.stdout)


def summary(gpus: list[dict]) -> tuple[int, float]:
    """(gpu_count, memory of the smallest GPU in GB)."""
    if not gpus:
        return 0, 0.0
    return len(gpus), min(float(g.get("memory_gb") or 0) for g in gpus)
