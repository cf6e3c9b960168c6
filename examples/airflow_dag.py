"""An Airflow DAG driving stcloud through its REST API (linted, not run by the tests).

Set the Airflow Variables ``stcloud_server`` and ``stcloud_token``; the DAG submits one
pipeline document (A -> B, A -> C, B starting from A's weights) and waits until it ends.
"""
from __future__ import annotations

import time
from datetime import datetime

import requests
from airflow.decorators import dag, task
from airflow.models import Variable

TERMINAL = {"completed", "failed", "cancelled"}

PIPELINE = {
    "name": "airflow-nightly",
    "defaults": {"provider": "auto", "hold": True, "config": {"max_train_steps": 200},
                 "dataloader_config": [{"id": "photos", "type": "local", "instance_data_dir": "datasets/photos",
                                        "caption_strategy": "textfile"}]},
    "steps": [
        {"name": "A"},
        {"name": "B", "depends_on": ["A"], "inputs": {"init_lora_weights": {"from": "A"}}},
        {"name": "C", "depends_on": ["A"], "on": "any"},
    ],
}


def _http() -> tuple[str, requests.Session]:
    server = Variable.get("stcloud_server").rstrip("/")
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {Variable.get('stcloud_token')}"
    return server, s


@dag(schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False, tags=["stcloud"])
def stcloud_pipeline():
    @task
    def submit() -> str:
        server, http = _http()
        r = http.post(f"{server}/api/cloud/pipelines", json=PIPELINE, timeout=120)
        r.raise_for_status()
        return r.json()["pipeline"]["id"]

    @task
    def wait(pipeline_id: str, timeout: float = 6 * 3600) -> dict:
        server, http = _http()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = http.get(f"{server}/api/cloud/pipelines/{pipeline_id}", timeout=30).json()["pipeline"]
            if info["status"] in TERMINAL:
                if info["status"] != "completed":
                    raise RuntimeError(f"pipeline {pipeline_id} {info['status']}")
                return info
            time.sleep(30)
        http.post(f"{server}/api/cloud/pipelines/{pipeline_id}/cancel", json={}, timeout=60)
        raise TimeoutError(f"pipeline {pipeline_id} did not finish")

    wait(submit())


stcloud_pipeline()
