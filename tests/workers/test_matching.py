"""Matching jobs to workers: label globs, GPU count, VRAM, local-only jobs. Pure."""
import pytest

from stcloud.workers import gpu, matching
from stcloud.workers.matching import WorkerCaps

A100 = WorkerCaps(labels={"gpu": "a100-80g", "region": "eu-west"}, gpu_count=2, vram_gb=80.0)
CPU = WorkerCaps(labels={"region": "us-east"}, gpu_count=0, vram_gb=0.0)
LOCAL = WorkerCaps(labels={"local": "true"}, is_local=True)


@pytest.mark.parametrize("req,caps,ok", [
    (None, CPU, True),
    ({}, A100, True),
    ({"labels": {"gpu": "a100*"}}, A100, True),
    ({"labels": {"gpu": "a100-??g"}}, A100, True),
    ({"labels": {"gpu": "h100*"}}, A100, False),
    ({"labels": {"gpu": "*"}}, CPU, False),  # missing key never matches
    ({"labels": {"region": "eu-*", "gpu": "a*"}}, A100, True),
    ({"labels": {"region": "[eu]*"}}, CPU, True),
    ({"labels": {"gpu": "A100*"}}, A100, False),  # case-sensitive
    ({"min_gpus": 2}, A100, True),
    ({"min_gpus": 3}, A100, False),
    ({"min_gpus": 1}, CPU, False),
    ({"min_vram_gb": 80}, A100, True),
    ({"min_vram_gb": 80.5}, A100, False),
    ({"min_vram_gb": 1}, CPU, False),
    ({"labels": {"gpu": "a100*"}, "min_gpus": 1, "min_vram_gb": 40}, A100, True),
])
def test_matches(req, caps, ok):
    assert matching.matches(req, caps) is ok
    assert (matching.mismatch(req, caps) is None) is ok


def test_mismatch_says_why():
    assert "missing label gpu" in matching.mismatch({"labels": {"gpu": "*"}}, CPU)
    assert "needs 3 GPU" in matching.mismatch({"min_gpus": 3}, A100)


def test_local_jobs_only_go_to_the_embedded_worker():
    pools = {"worker": matching.SHARED, "local": matching.EMBEDDED}
    assert matching.can_claim("local", None, LOCAL, pools)
    assert not matching.can_claim("local", None, A100, pools)
    assert matching.can_claim("worker", None, A100, pools)
    assert matching.can_claim("worker", None, LOCAL, pools)
    assert not matching.can_claim("replicate", None, LOCAL, pools)


def test_labels_parsing_and_requirements_validation():
    assert matching.parse_labels("gpu=a100, region=eu ,") == {"gpu": "a100", "region": "eu"}
    assert matching.clean_labels({"a": 1}) == {"a": "1"}
    with pytest.raises(ValueError):
        matching.parse_labels("novalue")
    with pytest.raises(ValueError):
        matching.clean_labels({"a": {"b": 1}})
    assert matching.normalize_requirements({"labels": {"gpu": "a*"}, "min_gpus": "2", "min_vram_gb": 0}) == {
        "labels": {"gpu": "a*"}, "min_gpus": 2}
    with pytest.raises(ValueError):
        matching.normalize_requirements({"min_gpus": -1})
    with pytest.raises(ValueError):
        matching.normalize_requirements({"labels": ["gpu"]})


def test_nvidia_smi_parsing():
    text = "NVIDIA A100-SXM4-80GB, 81920 MiB\nNVIDIA GeForce RTX 4090, 24564 MiB\n\n"
    gpus = gpu.parse_nvidia_smi(text)
    assert gpus == [{"name": "NVIDIA A100-SXM4-80GB", "memory_gb": 80.0},
                    {"name": "NVIDIA GeForce RTX 4090", "memory_gb": 24.0}]
    assert gpu.summary(gpus) == (2, 24.0)
    assert gpu.summary([]) == (0, 0.0)
    assert gpu.parse_nvidia_smi("garbage\n") == []
