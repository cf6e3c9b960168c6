"""A submit body -> ``SubmitRequest`` (SPEC §3): every field checked, 400 naming the field,
nothing written. The provider is checked against the registry: unknown names are refused
with the registered ones, a listed provider that is not available yet with its status."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from stcloud import db
from stcloud.api import validation
from stcloud.api.schemas.jobs import DataloaderConfig, SubmitBody
from stcloud.costs import rates
from stcloud.errors import BadRequest
from stcloud.jobs import config_fields
from stcloud.jobs.requirements import normalize_requirements
from stcloud.models import Job
from stcloud.providers import registry
from stcloud.providers.base import CloudTrainerService

_DATALOADER = TypeAdapter(DataloaderConfig)
_NAME_RE = re.compile(r"^[^/\\\x00-\x1f]+$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class SubmitRequest:
    provider: str
    name: str | None
    config: dict
    dataloader_config: list
    hardware: str | None
    data_consent: bool
    max_cost_usd: float | None
    idempotency_key: str | None
    snapshot_message: str | None
    config_name: str | None
    delivery: dict | None
    requirements: dict | None
    expected_dataset_sha256: str | None
    rerun_of: str | None
    options: dict  # the provider's per-job settings (body key = the provider's name)

    def fingerprint(self) -> str:
        """What makes two submits "the same" for an idempotency key (consent excluded)."""
        raw = json.dumps({"provider": self.provider, "name": self.name, "config": self.config,
                          "dataloader_config": self.dataloader_config, "hardware": self.hardware,
                          **({"options": self.options} if self.options else {})},
                         sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()


def _json_field(value: Any, name: str, kind: type) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise BadRequest(f"{name} is not valid JSON: {exc}", extra={"field": name}) from None
    if not isinstance(value, kind):
        what = "a JSON object" if kind is dict else "a JSON list of datasets"
        raise BadRequest(f"{name} must be {what}", extra={"field": name})
    return value


def parse_dataloader(value: Any) -> list:
    if value is None:
        raise BadRequest("dataloader_config is required (a list of datasets)", extra={"field": "dataloader_config"})
    dl = _json_field(value, "dataloader_config", list)
    if not dl:
        raise BadRequest("dataloader_config must list at least one dataset", extra={"field": "dataloader_config"})
    for i, entry in enumerate(dl):
        if not isinstance(entry, dict):
            raise BadRequest(f"dataloader_config entry #{i + 1} must be an object", extra={"field": "dataloader_config"})
    try:  # the API model: types and lengths of every entry's known members
        _DATALOADER.validate_python(dl)
    except ValidationError as exc:
        raise validation.problem_of(exc, "dataloader_config") from None
    return dl


def _opt_str(body: dict, key: str, max_len: int) -> str | None:
    value = body.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string", extra={"field": key})
    value = value.strip()
    if len(value) > max_len:
        raise BadRequest(f"{key} is too long (at most {max_len} characters)", extra={"field": key})
    return value or None


def provider_of(body: dict, default: str | None = None) -> CloudTrainerService:
    """The adapter of the body's provider, if it accepts jobs. Raises BadRequest."""
    provider = body.get("provider") or default
    if not provider:
        raise BadRequest(f"provider is required (one of {', '.join(registry.names())})", extra={"field": "provider"})
    registry.validate_name(provider)
    return registry.available(provider)


def _consent(value: Any) -> bool:
    if value in ("true", "1", "yes", "on"):
        return True
    if value in (None, "", "false", "0", "no", "off"):
        return False
    if not isinstance(value, bool):
        raise BadRequest("data_consent must be true or false", extra={"field": "data_consent"})
    return value


def _max_cost(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        value = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"max_cost_usd must be a number of dollars, got {value!r}",
                         extra={"field": "max_cost_usd"}) from None
    if not (value > 0) or value == float("inf"):
        raise BadRequest("max_cost_usd must be greater than 0", extra={"field": "max_cost_usd"})
    return value


def _requirements(service: CloudTrainerService, raw: Any) -> dict | None:
    if raw in ({}, None, ""):
        return None
    if not service.accepts_requirements:
        raise BadRequest(f"requirements (labels, min_gpus, min_vram_gb) apply to worker jobs only, not to "
                         f"{service.label}", extra={"field": "requirements"})
    try:
        return normalize_requirements(raw) or None
    except ValueError as exc:
        raise BadRequest(str(exc), extra={"field": "requirements"}) from None


def _options(service: CloudTrainerService, name: str, raw: Any) -> dict:
    if raw in (None, {}, ""):
        raw = {}
    if not isinstance(raw, dict):
        raise BadRequest(f"{name} must be an object of per-job settings for {service.label}", extra={"field": name})
    try:
        return service.validate_options(dict(raw))
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}", extra={"field": name}) from None


def _hardware(service: CloudTrainerService, name: str, hardware: str | None) -> str | None:
    # Jobs that workers claim are matched by requirements, not by profile: a named profile
    # only prices them (unknown names at the pool's default rate).
    if service.accepts_requirements:
        return hardware
    profiles = rates.hardware_profiles(name)
    if not profiles:
        return hardware
    hardware = hardware or service.default_hardware
    if hardware not in profiles and rates.adapter_profile(name, hardware) is None:
        raise BadRequest(f"unknown hardware {hardware!r} for {name}; expected one of "
                         f"{', '.join(sorted(profiles))}", extra={"field": "hardware"})
    return hardware


def parse_body(body: Any) -> SubmitRequest:
    """Validate a submit body. Raises BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    service = provider_of(body)
    # The API model checks types, bounds and lengths; the checks below need the registry or the database.
    validation.parse(SubmitBody, body)
    provider = body["provider"]
    if body.get("config") is None:
        raise BadRequest("config is required (the training config, a JSON object)", extra={"field": "config"})
    config = _json_field(body.get("config"), "config", dict)
    if problems := config_fields.errors_of(config):  # the schema the submit page's form checks with
        raise BadRequest(f"config: {problems[0]['message']}", extra={"field": f"config.{problems[0]['field']}",
                                                                    "errors": problems})
    dataloader = parse_dataloader(body.get("dataloader_config"))
    name = _opt_str(body, "name", 200)
    if name is not None and not _NAME_RE.match(name):
        raise BadRequest("name must not contain slashes or control characters", extra={"field": "name"})
    config_name = _opt_str(body, "config_name", 200)
    if config_name is not None and (not _NAME_RE.match(config_name) or config_name.startswith(".")):
        raise BadRequest("config_name must not contain slashes or start with a dot", extra={"field": "config_name"})
    consent = _consent(body.get("data_consent", False))
    max_cost = _max_cost(body.get("max_cost_usd"))
    key = _opt_str(body, "idempotency_key", 200)
    snapshot_message = _opt_str(body, "snapshot_message", 2000)
    delivery = body.get("delivery")
    if delivery in ({}, ""):
        delivery = None
    if delivery is not None and not isinstance(delivery, dict):
        raise BadRequest("delivery must be an object", extra={"field": "delivery"})
    requirements = _requirements(service, body.get("requirements"))
    expected = _opt_str(body, "expected_dataset_sha256", 64)
    if expected is not None:
        expected = expected.lower()
        if not _SHA_RE.match(expected):
            raise BadRequest("expected_dataset_sha256 must be 64 hex characters",
                             extra={"field": "expected_dataset_sha256"})
    rerun_of = _opt_str(body, "rerun_of", 40)
    if rerun_of is not None:
        with db.session() as s:
            if s.get(Job, rerun_of) is None:
                raise BadRequest(f"rerun_of: job {rerun_of} not found", extra={"field": "rerun_of"})
    options = _options(service, provider, body.get(provider))
    hardware = _hardware(service, provider, service.hardware_for_options(_opt_str(body, "hardware", 64), options))
    return SubmitRequest(provider, name, config, dataloader, hardware, consent, max_cost, key,
                         snapshot_message, config_name, delivery, requirements, expected, rerun_of, options)
