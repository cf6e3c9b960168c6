"""Submitting and previewing jobs (SPEC §3), consent and the instance settings."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from stcloud.api.types import (
    MAX_GPUS,
    MAX_VRAM_GB,
    Int,
    Num,
    PathText,
    Steps,
    Str,
    Usd,
    blank_none,
    json_text,
)

DELIVERY_TYPES = ("builtin", "s3", "hf", "hub", "huggingface", "local", "this_machine")


def _id_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _empty_none(value: Any) -> Any:
    return None if value in ({}, "") else value


def _false_if_blank(value: Any) -> Any:
    return False if value is None or value == "" else value


def _label_text(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


class TrainingConfig(BaseModel):
    """The SimpleTuner-style training config. Any key is passed to the trainer; the ones below
    are checked here (plain or ``--flag`` style)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    max_train_steps: Annotated[Steps | None, BeforeValidator(blank_none)] = None
    flag_max_train_steps: Annotated[Steps | None, BeforeValidator(blank_none)] = Field(None, alias="--max_train_steps")
    dash_max_train_steps: Annotated[Steps | None, BeforeValidator(blank_none)] = Field(None, alias="max-train-steps")


class Dataset(BaseModel):
    """One entry of ``dataloader_config`` (SimpleTuner's multidatabackend list)."""

    model_config = ConfigDict(extra="allow")
    id: Annotated[Str(200) | None, BeforeValidator(_id_text)] = None
    type: Str(64) | None = Field(None, description='``local`` (or none) is packaged and uploaded; '
                                                   'other types (``huggingface``, ``aws``) are passed through')
    dataset_type: Str(64) | None = Field(None, description="``image``, or a cache type (``text_embeds``, ...)")
    instance_data_dir: PathText(4096) | None = None
    disabled: bool | None = None


def _entries_are_objects(value: Any) -> Any:
    value = json_text(value)
    if isinstance(value, list):
        for i, entry in enumerate(value):
            if not isinstance(entry, dict):
                raise ValueError(f"entry #{i + 1} must be an object")
    return value


DataloaderConfig = Annotated[list[Dataset], BeforeValidator(_entries_are_objects), Field(min_length=1, max_length=100)]


class Delivery(BaseModel):
    """Where the outputs go (SPEC §7): this machine's S3 endpoint, an external bucket, the Hub."""

    model_config = ConfigDict(extra="allow")
    type: Literal[DELIVERY_TYPES]  # type: ignore[valid-type]
    endpoint_url: Str(2048) | None = None
    bucket: Str(255) | None = None
    prefix: Str(1024) | None = None
    region: Str(64) | None = None
    access_key: Str(1024) | None = None
    access_key_id: Str(1024) | None = None
    secret_key: Str(1024) | None = Field(None, json_schema_extra={"writeOnly": True})
    secret_access_key: Str(1024) | None = Field(None, json_schema_extra={"writeOnly": True})
    hub_model_id: Str(200) | None = None
    private: bool | None = None


class Requirements(BaseModel):
    """What a worker must have to claim the job (worker jobs only)."""

    labels: dict[Str(64, 1), Annotated[Str(256), BeforeValidator(_label_text)]] | None = Field(
        None, max_length=50, description="label -> glob the worker's label must match")
    min_gpus: Annotated[Int(0, MAX_GPUS) | None, BeforeValidator(blank_none)] = None
    min_vram_gb: Annotated[Num(0, MAX_VRAM_GB) | None, BeforeValidator(blank_none)] = None


class JobFields(BaseModel):
    """The members a submit, a preview and an estimate share."""

    model_config = ConfigDict(extra="allow")
    provider: Str(64) | None = Field(None, description="a registered provider (GET /api/cloud/providers)")
    hardware: Annotated[Str(64) | None, BeforeValidator(blank_none)] = None
    config: Annotated[TrainingConfig | None, BeforeValidator(json_text)] = None
    max_cost_usd: Annotated[Usd | None, BeforeValidator(blank_none)] = Field(
        None, description="per-job cap in USD; the job is cancelled when its running cost reaches it")


class SubmitBody(JobFields):
    """``POST /api/cloud/jobs/submit``. Per-job provider settings go under the provider's name
    (e.g. ``"slurm": {...}``); they are checked by that provider."""

    provider: Str(64) = Field(description="a registered provider (GET /api/cloud/providers)")
    config: Annotated[TrainingConfig, BeforeValidator(json_text)]
    dataloader_config: DataloaderConfig
    name: Annotated[Str(200) | None, BeforeValidator(blank_none)] = None
    data_consent: Annotated[bool, BeforeValidator(_false_if_blank)] = False
    idempotency_key: Annotated[Str(200) | None, BeforeValidator(blank_none)] = None
    snapshot_message: Annotated[Str(2000) | None, BeforeValidator(blank_none)] = None
    config_name: Annotated[Str(200) | None, BeforeValidator(blank_none)] = None
    delivery: Annotated[Delivery | None, BeforeValidator(_empty_none)] = None
    requirements: Annotated[Requirements | None, BeforeValidator(_empty_none)] = None
    expected_dataset_sha256: Annotated[Str(64) | None, BeforeValidator(blank_none)] = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$")
    rerun_of: Annotated[Str(40) | None, BeforeValidator(blank_none)] = None
    # pipelines and placement (docs/pipelines.md); their shapes and references are checked
    # by stcloud.pipelines (422 naming the field)
    depends_on: list[Str(200)] | Str(200) | None = Field(
        None, description="job ids this job waits for (it is `waiting` until they end)")
    on: Str(16) | None = Field(None, description="completed (default) | any")
    inputs: dict | None = Field(
        None, description='{"init_lora_weights" | "resume_from_checkpoint": {"from": <job id or step>}}')
    hold: bool | None = Field(None, description="over a spend limit: wait for the period to roll over instead of 402")
    placement: dict | None = Field(None, description='with provider "auto": {"wait_minutes": n}')
    auto_resume: dict | None = Field(None, description='{"max_attempts": n, "provider"?: name}: resume on failure')


class DataPreviewBody(BaseModel):
    """``POST /api/cloud/data-preview``: what a submit would upload."""

    model_config = ConfigDict(extra="allow")
    provider: Str(64) | None = None
    dataloader_config: DataloaderConfig


class CostEstimateBody(JobFields):
    """``POST /api/cloud/cost-estimate``: a submit body (only the pricing members matter)."""

    provider: Str(64)
    max_cost_usd: Annotated[Num(0, 1_000_000) | None, BeforeValidator(blank_none)] = None


class ConsentBody(BaseModel):
    consent: Literal["ask", "allow", "deny"] = Field(
        description="Always Ask / Always Allow / Never Upload")


class ConsentView(BaseModel):
    consent: Literal["ask", "allow", "deny"]
    label: str
    choices: dict[str, str]


class PublicUrlView(BaseModel):
    """``GET|PUT /api/cloud/settings/public-url``."""

    public_url: str | None
    webhook_endpoint: str | None = Field(description="where Replicate sends its webhooks")
    source: Literal["settings", "env"] | None = Field(description="settings, STCLOUD_PUBLIC_URL (env), or unset")
    help: str


class ProxyView(BaseModel):
    """``GET|PUT /api/cloud/settings/proxy`` (credentials in the URL are masked)."""

    proxy_url: str | None
    no_proxy: str
    has_credentials: bool
    source: Literal["settings", "env"] | None
    effective: dict[str, Any] = Field(description="{http, https, no_proxy: [...]}: what outbound calls use")


class PublicUrlBody(BaseModel):
    public_url: PathText(2048) | None = Field(description="https://training.example.com, or null to clear")


class ProxyBody(BaseModel):
    proxy_url: PathText(2048) | None = Field(description="http://proxy:3128, or null to clear")
    no_proxy: Str(4096) | None = None


class ProviderState(BaseModel):
    """What the provider's own scheduler says about the job (Slurm): read by the sync every few
    seconds; ``reason`` is the scheduler's (``Resources``, ``Priority``, ``PartitionDown``…)."""

    model_config = ConfigDict(extra="allow")
    job_id: str | None = Field(None, description="the scheduler's job id (Slurm job id)")
    state: str = Field(description="the scheduler's state, e.g. PENDING, RUNNING, TIMEOUT, NODE_FAIL")
    reason: str | None = Field(None, description="why it waits or ended, in the scheduler's words")
    nodes: str | None = None
    partition: str | None = None
    transport: str | None = Field(None, description='Slurm: "cli" (sbatch & co.) or "rest" (slurmrestd)')
    polled_at: str | None = Field(None, description="when the sync last read it (ISO 8601)")


class JobView(BaseModel):
    """A job (SPEC §2). More members than listed may appear."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str | None = None
    provider: str
    status: str
    provider_state: ProviderState | None = Field(
        None, description="the provider's own scheduler on this job (Slurm); null for other providers")


class JobAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")
    job: JobView
    idempotent: bool | None = None


class RerunBody(BaseModel):
    """``POST /api/cloud/jobs/<id>/rerun`` (the body is optional)."""

    exact: bool = Field(True, description="re-run with the recorded dataset (refused if it changed)")
    data_consent: bool | None = None
    snapshot_message: Str(2000) | None = None




class SubmitProgressQuery(BaseModel):
    idempotency_key: Str(200, 1)


MAX_OFFSET = 2**53  # JSON-safe; SQLite's integers stop at 2**63


class JobListQuery(BaseModel):
    status: Str(200) | None = Field(None, description="comma-separated statuses")
    provider: Str(64) | None = None
    q: Str(500) | None = Field(None, description="search in names, ids and errors")
    limit: Int(1, 500) | None = None
    offset: Int(0, 2**31) | None = None
    cursor: Str(500) | None = Field(None, description="next_cursor / prev_cursor of a previous page")


class LogQuery(BaseModel):
    offset: Int(0, MAX_OFFSET) | None = Field(None, description="byte offset to read from")


class EventsQuery(BaseModel):
    after: Int(0, MAX_OFFSET) | None = None
    limit: Int(1, 5000) | None = None


class CompareQuery(BaseModel):
    ids: Str(4000) = Field(description="comma-separated job ids (2 or more)")
    diff: Str(200) | None = Field(None, description="a,b: the two jobs whose configs to diff")


class JobList(BaseModel):
    model_config = ConfigDict(extra="allow")
    jobs: list[JobView]
    total: int | None = None
    next_cursor: str | None = None


# ---- answers (what the routes return; schemathesis checks every answer against them) --------

class PackagingTotals(BaseModel):
    datasets: int
    files: int
    bytes: int
    excluded: int
    estimated_archive_bytes: int


class Summary(BaseModel):
    """A packaging summary (``stcloud.packaging``): the local datasets, the entries that are not
    packaged (remote types, caches), the totals and the excluded files (capped)."""

    datasets: list[dict[str, Any]] = Field(description="[{id, source_dir, folder, archive_dir, files, bytes, "
                                                       "images, videos, captions, excluded, shares_folder_with}]")
    not_packaged: list[dict[str, Any]] = Field(description="[{id, type, dataset_type, reason}]")
    totals: PackagingTotals
    excluded: list[dict[str, Any]] = Field(description="[{dataset, path, reason, is_dir}]")
    excluded_more: int = Field(description="excluded files not listed")


class SubmitProgress(BaseModel):
    """``GET /api/cloud/jobs/submit/progress``: the job a submit in flight made (null: none yet)."""

    idempotency_key: str
    job: JobView | None


class DataPreview(BaseModel):
    """``POST /api/cloud/data-preview``: what a submit would upload and whether consent is needed."""

    provider: str
    summary: Summary
    has_local_data: bool
    consent: Literal["ask", "allow", "deny"]
    consent_label: str
    consent_required: bool
    upload_blocked: bool
    upload_limit_bytes: int | None = Field(description="null: no limit")
    estimated_archive_bytes: int
    within_limit: bool
    destination: str | None = Field(description="where the data goes (null: it stays on this machine)")


class LogChunk(BaseModel):
    """``GET /api/cloud/jobs/<id>/logs``: the log text from ``offset``."""

    text: str
    next_offset: int
    complete: bool = Field(description="the job ended and this is the end of its log")
    size: int


class JobEvent(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: int
    at: str
    source: str | None
    from_: str | None = Field(alias="from", serialization_alias="from")
    to: str
    accepted: bool
    detail: str | None


class JobEvents(BaseModel):
    events: list[JobEvent]
    next_after: int | None = Field(description="pass as ?after= for the next page (null: no more)")


class CompareSample(BaseModel):
    step: int
    url: str = Field(description="``/api/cloud/jobs/<id>/checkpoints/<step>/files/<name>``")


class CompareJob(BaseModel):
    """One job of a comparison: its summary and its loss series ``[[step, loss], ...]``."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str | None
    status: str
    provider: str
    hardware: str | None
    cost_usd: float | None
    estimated_cost_usd: float | None
    steps: int | None
    total_steps: Any = Field(description="the job's total steps (from its progress or config)")
    learning_rate: Any
    lr_scheduler: Any
    final_loss: float | None
    best_loss: float | None
    duration_seconds: float | None
    series: list[list[float]]
    samples: list[CompareSample] = Field(description="the job's sample images, oldest step first (a step may repeat)")


class ConfigChange(BaseModel):
    key: str = Field(description="a flattened config key, e.g. ``config.learning_rate``")
    values: dict[str, Any] = Field(description="job id -> value (null when missing)")
    missing: list[str] = Field(description="the jobs without this key")


class ConfigDiff(BaseModel):
    jobs: list[str]
    changes: list[ConfigChange]


class Comparison(BaseModel):
    """``GET /api/cloud/jobs/compare``."""

    model_config = ConfigDict(extra="allow")
    jobs: list[CompareJob]
    diff: ConfigDiff
