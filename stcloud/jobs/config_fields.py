"""The common SimpleTuner config fields: one pydantic v2 schema used by the submit API (a bad
value is a 400 naming ``config.<field>``), by ``POST /api/cloud/config/validate`` (the submit
page's form checks as you type) and to draw that form (labels, help, when a field applies,
presets per model family). Pure: no Flask, no database.

Only these fields are checked; every other key of a config passes through untouched, and
SimpleTuner's CLI-style spellings (``--learning_rate``) are checked under their plain name.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FAMILIES = ("reference", "flux", "sdxl", "sd3", "sd2x", "sd1x", "pixart_sigma", "kolors", "auraflow", "sana",
            "lumina2", "hidream", "ltxvideo", "wan")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "sine")
PRECISIONS = ("no", "fp16", "bf16", "fp8")


def _ui(label: str, group: str, applies: dict | None = None, **more) -> dict:
    """What the form needs beyond the JSON schema: its label, its group, and when it applies
    (``{"field": [values that show it]}`` or ``{"field": {"not": [values that hide it]}}``)."""
    return {"x-label": label, "x-group": group, **({"x-applies": applies} if applies else {}), **more}


class CommonConfig(BaseModel):
    """The SimpleTuner settings most runs change. ``None`` = not set (the trainer's default)."""

    model_config = ConfigDict(extra="allow", title="SimpleTunerCommonConfig")

    model_family: Literal[FAMILIES] | None = Field(  # type: ignore[valid-type]
        None, description="Which base model family to train (flux, sdxl, ...). 'reference' is stcloud's small "
                          "built-in trainer for trying things out.",
        json_schema_extra=_ui("Model family", "model"))
    model_type: Literal["lora", "full"] | None = Field(
        None, description="lora trains a small adapter on top of the frozen model; full fine-tunes every weight "
                          "(much more memory).", json_schema_extra=_ui("Model type", "model"))
    lora_rank: int | None = Field(
        None, ge=1, le=1024, description="Adapter size. Higher learns more detail and gives a larger file; "
                                         "4-64 is typical.",
        json_schema_extra=_ui("LoRA rank", "model", {"model_type": {"not": ["full"]}}))
    lora_alpha: float | None = Field(
        None, gt=0, le=4096, description="Scales the adapter (alpha / rank). Usually equal to the rank.",
        json_schema_extra=_ui("LoRA alpha", "model", {"model_type": {"not": ["full"]}}, step="any"))
    learning_rate: float | None = Field(
        None, gt=0, le=10, description="Step size. LoRA: 1e-4 to 1e-3 is typical; full fine-tunes use ~1e-5.",
        json_schema_extra=_ui("Learning rate", "optimizer", step="any"))
    lr_scheduler: Literal[SCHEDULERS] | None = Field(  # type: ignore[valid-type]
        None, description="How the learning rate changes over the run.",
        json_schema_extra=_ui("LR scheduler", "optimizer"))
    lr_warmup_steps: int | None = Field(
        None, ge=0, description="Steps spent ramping the learning rate up from 0 (not with 'constant').",
        json_schema_extra=_ui("Warm-up steps", "optimizer", {"lr_scheduler": {"not": ["constant", None]}}))
    max_train_steps: int | None = Field(
        None, ge=1, le=10_000_000, description="How many optimizer steps the run takes. It also prices the job.",
        json_schema_extra=_ui("Steps", "schedule"))
    train_batch_size: int | None = Field(
        None, ge=1, le=4096, description="Images per step. Larger is smoother but needs more GPU memory.",
        json_schema_extra=_ui("Batch size", "schedule"))
    resolution: float | None = Field(
        None, gt=0, le=16384, description="Training resolution: pixels on the short side (pixel), or megapixels "
                                          "(area).", json_schema_extra=_ui("Resolution", "data", step="any"))
    resolution_type: Literal["pixel", "area", "pixel_area"] | None = Field(
        None, description="How to read the resolution: pixel (e.g. 1024) or area in megapixels (e.g. 1.0).",
        json_schema_extra=_ui("Resolution type", "data"))
    checkpointing_steps: int | None = Field(
        None, ge=0, description="Save a checkpoint every N steps (0 = only at the end).",
        json_schema_extra=_ui("Checkpoint every", "schedule"))
    checkpoints_total_limit: int | None = Field(
        None, ge=1, le=10_000, description="Keep at most this many checkpoints (older ones are deleted).",
        json_schema_extra=_ui("Checkpoints kept", "schedule"))
    validation_steps: int | None = Field(
        None, ge=0, description="Render validation images every N steps (0 = never).",
        json_schema_extra=_ui("Validate every", "schedule", {"model_family": {"not": ["reference"]}}))
    validation_prompt: str | None = Field(
        None, max_length=2000, description="The prompt the validation images are rendered from.",
        json_schema_extra=_ui("Validation prompt", "schedule"))
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="Random seed: the same seed and data give the same run.",
        json_schema_extra=_ui("Seed", "schedule"))
    mixed_precision: Literal[PRECISIONS] | None = Field(  # type: ignore[valid-type]
        None, description="Number format on the GPU: bf16 on recent GPUs, fp16 on older ones, no for full "
                          "precision. The reference trainer runs on the CPU and ignores it.",
        json_schema_extra=_ui("Mixed precision", "model", {"model_family": {"not": ["reference"]}}))

    @field_validator("lora_rank", "lr_warmup_steps", "max_train_steps", "train_batch_size", "checkpointing_steps",
                     "checkpoints_total_limit", "validation_steps", "seed", "lora_alpha", "learning_rate",
                     "resolution", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not true/false")
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _together(self) -> CommonConfig:
        if self.resolution is not None:
            if self.resolution_type == "area":
                if self.resolution > 1000:
                    raise _field_error("resolution", "with resolution_type area it is megapixels: at most 1000")
            elif self.resolution != int(self.resolution) or self.resolution < 4:
                raise _field_error("resolution", "must be a whole number of pixels >= 4 (or set resolution_type "
                                                 "to area for megapixels)")
        if (self.lr_warmup_steps and self.max_train_steps and self.lr_warmup_steps > self.max_train_steps
                and (self.lr_scheduler or "constant") != "constant"):
            raise _field_error("lr_warmup_steps", f"must be at most the steps ({self.max_train_steps})")
        return self


class _CrossFieldError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _field_error(field: str, message: str) -> _CrossFieldError:
    return _CrossFieldError(field, message)


FIELDS = tuple(CommonConfig.model_fields)

# Presets per model family: what the form fills in when a family is chosen.
PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"model_type": "lora", "lora_rank": 4, "lora_alpha": 4, "learning_rate": 3e-3,
                  "lr_scheduler": "constant", "max_train_steps": 200, "train_batch_size": 4, "resolution": 32,
                  "resolution_type": "pixel", "checkpointing_steps": 50, "checkpoints_total_limit": 5, "seed": 42},
    "flux": {"model_type": "lora", "lora_rank": 16, "lora_alpha": 16, "learning_rate": 1e-4,
             "lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 100, "max_train_steps": 2000,
             "train_batch_size": 1, "resolution": 1024, "resolution_type": "pixel", "checkpointing_steps": 250,
             "checkpoints_total_limit": 5, "validation_steps": 250, "seed": 42, "mixed_precision": "bf16"},
    "sdxl": {"model_type": "lora", "lora_rank": 32, "lora_alpha": 32, "learning_rate": 1e-4,
             "lr_scheduler": "cosine", "lr_warmup_steps": 100, "max_train_steps": 3000, "train_batch_size": 2,
             "resolution": 1024, "resolution_type": "pixel", "checkpointing_steps": 500,
             "checkpoints_total_limit": 5, "validation_steps": 500, "seed": 42, "mixed_precision": "bf16"},
    "sd3": {"model_type": "lora", "lora_rank": 16, "lora_alpha": 16, "learning_rate": 1e-4,
            "lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 100, "max_train_steps": 2000,
            "train_batch_size": 1, "resolution": 1.0, "resolution_type": "area", "checkpointing_steps": 250,
            "checkpoints_total_limit": 5, "validation_steps": 250, "seed": 42, "mixed_precision": "bf16"},
    "sd1x": {"model_type": "lora", "lora_rank": 16, "lora_alpha": 16, "learning_rate": 1e-4,
             "lr_scheduler": "cosine", "lr_warmup_steps": 50, "max_train_steps": 2000, "train_batch_size": 4,
             "resolution": 512, "resolution_type": "pixel", "checkpointing_steps": 500,
             "checkpoints_total_limit": 5, "validation_steps": 500, "seed": 42, "mixed_precision": "fp16"},
}


def normalize_key(key: str) -> str:
    return key.lstrip("-").replace("-", "_")


def common_part(config: dict) -> dict:
    """The checked fields of ``config`` under their plain names (``--lr`` style keys too)."""
    out = {}
    for key, value in config.items():
        name = normalize_key(str(key))
        if name in CommonConfig.model_fields:
            out[name] = value
    return out


def errors_of(config: Any) -> list[dict]:
    """``[{"field", "message"}]`` for the checked fields of ``config`` (empty = valid)."""
    if not isinstance(config, dict):
        return [{"field": None, "message": "config must be a JSON object"}]
    fields = common_part(config)
    out = _errors(fields)
    bad = {e["field"] for e in out}
    if bad:  # the checks across fields run only on valid fields: run them on the others too
        out += [e for e in _errors({k: v for k, v in fields.items() if k not in bad}) if e["field"] not in bad]
    return out


def _errors(fields: dict) -> list[dict]:
    try:
        CommonConfig.model_validate(fields)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _CrossFieldError):
                out.append({"field": ctx_err.field, "message": f"{ctx_err.field}: {ctx_err}"})
                continue
            field = str(err["loc"][0]) if err.get("loc") else None
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "literal_error":
                choices = ", ".join(str(c) for c in _choices(field))
                msg = f"must be one of {choices}"
            out.append({"field": field, "message": f"{field}: {msg[:1].lower()}{msg[1:]}" if field else msg})
        return out
    return []


def _choices(field: str | None) -> list:
    prop = form_schema()["properties"].get(field or "", {})
    return [c for c in prop.get("enum", []) if c is not None]


def form_schema() -> dict:
    """The JSON schema of the checked fields (OpenAPI 3.1 compatible), with the form's extras."""
    schema = CommonConfig.model_json_schema()
    for prop in schema["properties"].values():
        options = prop.pop("anyOf", None)
        if options:  # Optional[X]: keep X's constraints at the top level for the form
            for opt in options:
                if opt.get("type") != "null":
                    prop.update(opt)
            if "enum" in prop:
                prop["enum"] = [v for v in prop["enum"] if v is not None]
    return schema


def form_fields() -> list[dict]:
    """The form's fields in order: name, label, help, kind (number/select/text), constraints."""
    schema = form_schema()
    out = []
    for name, prop in schema["properties"].items():
        kind = "select" if "enum" in prop else ("number" if prop.get("type") in ("integer", "number") else "text")
        out.append({"name": name, "label": prop.get("x-label", name), "help": prop.get("description", ""),
                    "group": prop.get("x-group", "other"), "kind": kind, "integer": prop.get("type") == "integer",
                    "choices": prop.get("enum", []), "min": prop.get("minimum", prop.get("exclusiveMinimum")),
                    "max": prop.get("maximum"), "step": prop.get("x-step") or prop.get("step")
                    or (1 if prop.get("type") == "integer" else "any"), "applies": prop.get("x-applies")})
    return out
