"""The config field schema (``jobs/config_fields.py``): one pydantic schema for the submit API,
``POST /api/cloud/config/validate`` and the Submit page's form."""
from __future__ import annotations

import pytest

from stcloud.jobs import config_fields


@pytest.mark.parametrize("config, field", [
    ({"lora_rank": 0}, "lora_rank"),
    ({"lora_rank": True}, "lora_rank"),
    ({"--learning_rate": "fast"}, "learning_rate"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"max_train_steps": 10.5}, "max_train_steps"),
    ({"mixed_precision": "fp32"}, "mixed_precision"),
    ({"model_family": "dalle"}, "model_family"),
    ({"resolution": 1.5}, "resolution"),
    ({"resolution": 2000, "resolution_type": "area"}, "resolution"),
    ({"lr_scheduler": "cosine", "lr_warmup_steps": 50, "max_train_steps": 10}, "lr_warmup_steps"),
    ({"seed": -1}, "seed"),
    ({"validation_prompt": "x" * 2001}, "validation_prompt"),
])
def test_bad_values_name_their_field(config, field):
    errors = config_fields.errors_of(config)
    assert [e["field"] for e in errors] == [field], errors
    assert errors[0]["message"].startswith(f"{field}: ")


@pytest.mark.parametrize("config", [
    {},
    {"max_train_steps": "100", "--learning_rate": "1e-4", "lora_rank": 16.0, "anything_else": {"x": [1]}},
    {"resolution": 1.0, "resolution_type": "area", "lr_scheduler": "constant", "lr_warmup_steps": 500,
     "max_train_steps": 10},
    config_fields.PRESETS["flux"],
    {"model_family": "sdxl", "mixed_precision": "bf16", "seed": None, "lora_alpha": ""},
])
def test_good_configs_pass(config):
    assert config_fields.errors_of(config) == []


def test_every_preset_is_valid_and_names_known_fields():
    for family, preset in config_fields.PRESETS.items():
        assert family in config_fields.FAMILIES
        assert set(preset) <= set(config_fields.FIELDS)
        assert config_fields.errors_of({"model_family": family, **preset}) == []


def test_cross_field_checks_run_beside_field_errors():
    errors = config_fields.errors_of({"lora_rank": 0, "lr_scheduler": "linear", "lr_warmup_steps": 500,
                                      "max_train_steps": 100})
    assert [e["field"] for e in errors] == ["lora_rank", "lr_warmup_steps"]


def test_validate_endpoint(client):
    r = client.post("/api/cloud/config/validate", json={"config": {"lora_rank": 8, "learning_rate": 1e-4}})
    assert r.status_code == 200 and r.json == {"valid": True, "errors": []}
    r = client.post("/api/cloud/config/validate", json={"config": {"lora_rank": 0}})
    assert r.status_code == 200 and r.json["valid"] is False and r.json["errors"][0]["field"] == "lora_rank"
    for body, status in (({"cfg": {}}, 400), ({"config": [1]}, 400)):
        r = client.post("/api/cloud/config/validate", json=body)
        assert r.status_code == status and r.mimetype == "application/problem+json"
    r = client.post("/api/cloud/config/validate", data="{", content_type="application/json")
    assert r.status_code == 400


def test_fields_endpoint_serves_the_form_schema(client):
    body = client.get("/api/cloud/config/fields").json
    names = [f["name"] for f in body["fields"]]
    assert names[:3] == ["model_family", "model_type", "lora_rank"] and "mixed_precision" in names
    assert body["presets"]["flux"]["mixed_precision"] == "bf16"
    rank = next(f for f in body["fields"] if f["name"] == "lora_rank")
    assert rank["min"] == 1 and rank["max"] == 1024 and rank["applies"] == {"model_type": {"not": ["full"]}}
    assert rank["help"]
    assert body["schema"]["properties"]["lora_rank"]["type"] == "integer"


def test_submit_api_refuses_a_bad_field_with_the_same_schema(client, tmp_path):
    data = tmp_path / "ds"
    data.mkdir()
    (data / "a.txt").write_text("caption\n")
    body = {"provider": "worker", "config": {"max_train_steps": 10, "lora_rank": 0},
            "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": str(data)}]}
    r = client.post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 400 and r.json["field"] == "config.lora_rank", r.get_data(as_text=True)
    assert "greater than or equal to 1" in r.json["detail"]
    assert client.get("/api/cloud/jobs").json["total"] == 0  # nothing written
