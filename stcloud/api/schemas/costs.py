"""Costs: limits, rates, estimates (SPEC §6)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, RootModel, Tag

from stcloud.api.types import MAX_GPUS, MAX_USD, MAX_VRAM_GB, Int, Num, Str, blank_none

MAX_USD_PER_HOUR = 10_000.0
MAX_SECONDS_PER_STEP = 86_400.0


class LimitBody(BaseModel):
    """``PUT /api/cloud/cost-limits/<provider|all>``: members not sent keep their value. A GET
    answer may be sent back as is (its read-only members are ignored)."""

    model_config = ConfigDict(extra="allow")
    enabled: bool | None = None
    amount_usd: Num(0, MAX_USD) | None = None
    period: Literal["daily", "weekly", "monthly"] | None = None
    action: Literal["warn", "block"] | None = None
    timezone: Str(64) | None = None
    stop_running: bool | None = None


class Rate(BaseModel):
    """One hardware rate; give ``usd_per_hour`` or ``usd_per_second``."""

    model_config = ConfigDict(extra="allow")
    provider: Str(64)
    hardware: Annotated[Str(64) | None, BeforeValidator(blank_none)] = None
    usd_per_hour: Annotated[Num(0, MAX_USD_PER_HOUR) | None, BeforeValidator(blank_none)] = None
    usd_per_second: Annotated[Num(0, MAX_USD_PER_HOUR / 3600) | None, BeforeValidator(blank_none)] = None
    label: Str(100) | None = None
    note: Str(500) | None = None
    gpu_count: Annotated[Int(1, MAX_GPUS) | None, BeforeValidator(blank_none)] = None
    vram_gb: Annotated[Num(0, MAX_VRAM_GB) | None, BeforeValidator(blank_none)] = None
    effective_from: Str(64) | None = Field(None, description="ISO 8601 with an offset; default now")


SecondsPerStep = Annotated[Num(gt=0, hi=MAX_SECONDS_PER_STEP), Field(description="seconds per training step")]


class RatesUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rates: list[Rate] | None = Field(None, max_length=1000)
    seconds_per_step: SecondsPerStep | dict[Str(100, 1), SecondsPerStep | None] | None = Field(
        None, description="a number (the default) or {default | <provider>/<hardware>: seconds, null removes}")


def _rates_shape(value: Any) -> str:
    if isinstance(value, list):
        return "RateList"
    if isinstance(value, dict) and ("rates" in value or "seconds_per_step" in value):
        return "RatesUpdate"
    return "Rate"


class RatesBody(RootModel[Annotated[Annotated[RatesUpdate, Tag("RatesUpdate")]
                                    | Annotated[list[Rate], Field(max_length=1000), Tag("RateList")]
                                    | Annotated[Rate, Tag("Rate")], Discriminator(_rates_shape)]]):
    """``PUT /api/cloud/rates``: ``{rates, seconds_per_step}``, a list of rates, or one rate."""


class EstimateView(BaseModel):
    model_config = ConfigDict(extra="allow")
    estimated_cost_usd: float
    rate_usd_per_second: float
    would_block: bool
    warnings: list[str]


class SummaryQuery(BaseModel):
    days: Int(1, 366) | None = None
    timezone: Str(64) | None = None
    tz: Str(64) | None = None


class LimitStatusQuery(BaseModel):
    provider: Str(64) | None = Field(None, description="a provider name, or all")


# ---- answers --------------------------------------------------------------------------------

class LimitStatus(BaseModel):
    """``GET /api/cloud/cost-limit/status`` and ``GET|PUT /api/cloud/cost-limits/<provider>``
    (SPEC §6): the limit and the spend in its current period."""

    provider: str = Field(description="a provider name, or all")
    enabled: bool
    amount_usd: float
    period: Literal["daily", "weekly", "monthly"]
    action: Literal["warn", "block"]
    timezone: str
    stop_running: bool
    configured: bool = Field(description="false: no limit stored (defaults shown)")
    spent_usd: float
    reserved_usd: float
    committed_usd: float
    finished_usd: float
    running_usd: float
    active_jobs: int
    percent_used: float
    percent_spent: float
    is_warning: bool
    is_exceeded: bool
    period_start: str
    period_end: str
    as_of: str


class LimitList(BaseModel):
    limits: list[LimitStatus]


class CostTotals(BaseModel):
    cost_usd: float
    running_usd: float
    reserved_usd: float
    finished_jobs: int
    active_jobs: int


class CostSummary(BaseModel):
    """``GET /api/cloud/costs/summary``: spend per day, provider and user, totals, estimates
    against actual costs, the limits and the chart's data."""

    days: int
    timezone: str
    start: str
    end: str
    per_day: list[dict[str, Any]] = Field(description="[{date, providers: {name: usd}, total}]")
    per_provider: dict[str, dict[str, float | int]]
    per_user: list[dict[str, Any]]
    totals: CostTotals
    jobs_by_status: dict[str, int]
    estimates: list[dict[str, Any]] = Field(description="finished jobs: estimate against actual cost")
    estimate_accuracy: dict[str, Any]
    active: list[dict[str, Any]]
    limits: list[LimitStatus]
    chart: dict[str, Any] = Field(description="{labels, series: {provider: [usd]}, limit?}")


class RateView(BaseModel):
    """A hardware rate (``source``: table | default | none; a rate with a future
    ``effective_from`` is listed under ``upcoming``)."""

    model_config = ConfigDict(extra="allow")
    provider: str
    hardware: str
    usd_per_second: float | None
    usd_per_hour: float | None
    label: str | None = None
    gpu_count: int | None = None
    vram_gb: float | None = None
    effective_from: str | None = None
    note: str | None = None
    source: str | None = None
    upcoming: list[RateView] | None = None


class RatesView(BaseModel):
    """``GET /api/cloud/rates``: the rates in force, their history and seconds per step."""

    rates: list[RateView]
    history: list[RateView]
    seconds_per_step: dict[str, float] = Field(description='{"default": n, "<provider>/<hardware>": n, ...}')


class RatesWritten(BaseModel):
    """``PUT /api/cloud/rates``: the rows written and the rates now in force."""

    written: list[RateView]
    rates: list[RateView]
    seconds_per_step: dict[str, float]
