"""Costs: REST API under /api/cloud (limits, status, summary, estimate, rates) and the Spend
page with its fragments (limit bar, limit form, rates editor, estimate)."""
from __future__ import annotations

import json

from flask import Blueprint, jsonify, redirect, request, url_for

from stcloud import db
from stcloud.api import validation
from stcloud.api.schemas import costs as schemas
from stcloud.api.schemas.jobs import CostEstimateBody
from stcloud.api.spec import operation
from stcloud.costs import limits, periods, pricing, rates, service
from stcloud.errors import BadRequest
from stcloud.providers import config as provider_config
from stcloud.providers import registry
from stcloud.web.htmx import is_fragment_request, render
from stcloud.web.params import int_arg

api = Blueprint("costs_api", __name__, url_prefix="/api/cloud")
pages = Blueprint("costs_pages", __name__)
bp = pages  # the foundation's name for the page blueprint


# ---- API -------------------------------------------------------------------------------

@api.get("/cost-limit/status")
@operation(query=schemas.LimitStatusQuery, summary="Spend against a limit (SPEC §6)", tags=["costs"],
           responses={200: schemas.LimitStatus})
def limit_status():
    validation.query(schemas.LimitStatusQuery)
    return jsonify(service.limit_status(request.args.get("provider") or "all"))


@api.get("/cost-limits")
@operation(summary="Every spending limit and its spend", tags=["costs"], responses={200: schemas.LimitList})
def list_limits():
    with db.session() as s:
        return jsonify({"limits": limits.all_statuses(s)})


@api.get("/cost-limits/<provider>")
@operation(summary="A spending limit (provider name or all) and its spend", tags=["costs"],
           responses={200: schemas.LimitStatus})
def get_limit(provider):
    return jsonify(service.limit_status(limits.validate_scope(provider)))


@api.put("/cost-limits/<provider>")
@operation(body=schemas.LimitBody, summary="Create or change a spending limit (provider name or all)", tags=["costs"],
           responses={200: schemas.LimitStatus})
def put_limit(provider):
    limits.put_limit(limits.validate_scope(provider), validation.checked(schemas.LimitBody))
    return jsonify(service.limit_status(provider))


def _tz_arg() -> str | None:
    tz = request.args.get("timezone") or request.args.get("tz") or None
    if tz is not None and not periods.is_valid_timezone(tz):
        raise BadRequest(f"timezone {tz!r} is not a known IANA time zone", extra={"field": "timezone"})
    return tz


@api.get("/costs/summary")
@operation(query=schemas.SummaryQuery, summary="Spend per day, provider and hardware", tags=["costs"],
           responses={200: schemas.CostSummary})
def costs_summary():
    validation.query(schemas.SummaryQuery)
    return jsonify(service.summary(int_arg("days", 30, 1, 366), _tz_arg()))


def _form_estimate_body() -> dict:
    """A submit form (htmx: form-encoded, or JSON with string values) -> a submit body."""
    raw = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    raw = dict(raw or {})
    provider = raw.get("provider") or None
    service = registry.maybe_get(provider) if provider else None
    # The form's hardware select is for providers whose jobs pick a profile (as in the submit
    # form's own parsing): jobs that workers claim are priced at their pool's profile.
    priced = service is not None and not service.accepts_requirements and bool(service.hardware_profiles())
    body: dict = {"provider": provider, "hardware": (raw.get("hardware") or None) if priced else None}
    config = raw.get("config", raw.get("config_json"))
    if isinstance(config, str):
        try:
            config = json.loads(config) if config.strip() else {}
        except ValueError as exc:
            raise BadRequest(f"config is not valid JSON: {exc}", extra={"field": "config"}) from None
    body["config"] = config if config is not None else {}
    steps = raw.get("max_train_steps")
    if steps not in (None, "") and isinstance(body["config"], dict):
        try:
            body["config"] = {**body["config"], "max_train_steps": int(str(steps).strip())}
        except ValueError:
            raise BadRequest("max_train_steps must be a whole number", extra={"field": "max_train_steps"}) from None
    cap = raw.get("max_cost_usd")
    if isinstance(cap, str):
        try:
            cap = float(cap) if cap.strip() else None
        except ValueError:
            raise BadRequest("max_cost_usd must be a number", extra={"field": "max_cost_usd"}) from None
    body["max_cost_usd"] = cap
    return body


@api.post("/cost-estimate")
@operation(body=CostEstimateBody, summary="What a submit would cost and meet at the limits", tags=["costs"],
           responses={200: schemas.EstimateView})
def cost_estimate():
    """JSON in, JSON out; an htmx request (the submit form) gets the estimate fragment."""
    if not request.headers.get("HX-Request"):
        return jsonify(service.estimate_for_submit(validation.checked(CostEstimateBody)))
    try:
        body = _form_estimate_body()
        validation.parse(CostEstimateBody, body)
        result = service.estimate_for_submit(body)
    except BadRequest as exc:
        return render("costs/_submit_estimate.html", cost_estimate_error=exc.detail)
    return render("costs/_submit_estimate.html", cost_estimate=result)


@api.get("/rates")
@operation(summary="Hardware rates, their history and seconds per step", tags=["costs"],
           responses={200: schemas.RatesView})
def get_rates():
    with db.session() as s:
        return jsonify({"rates": rates.current_rates(s), "history": rates.rate_history(s),
                        "seconds_per_step": rates.seconds_per_step_table(s)})


@api.put("/rates")
@operation(body=schemas.RatesBody, summary="Set hardware rates and seconds per step", tags=["costs"],
           responses={200: schemas.RatesWritten})
def put_rates():
    """Body: one rate, a list of rates, or ``{"rates": [...], "seconds_per_step": ...}``."""
    body = request.get_json(silent=True) if request.data else None
    if body is None:
        raise BadRequest("request body must be JSON: a rate, a list of rates or {\"rates\": [...]}")
    validation.parse(schemas.RatesBody, body)
    if isinstance(body, list):
        items, sps = body, None
    elif isinstance(body, dict) and ("rates" in body or "seconds_per_step" in body):
        items, sps = body.get("rates") or [], body.get("seconds_per_step")
        if not isinstance(items, list):
            raise BadRequest("rates must be a list", extra={"field": "rates"})
    elif isinstance(body, dict):
        items, sps = [body], None
    else:
        raise BadRequest("request body must be a rate object or a list of rates")
    written = rates.put_rates(items) if items else []
    if sps is not None:
        rates.put_seconds_per_step(sps)
    with db.session() as s:
        return jsonify({"written": written, "rates": rates.current_rates(s),
                        "seconds_per_step": rates.seconds_per_step_table(s)})


# ---- pages -----------------------------------------------------------------------------

def _spend_context(days: int) -> dict:
    data = service.summary(days)
    with db.session() as s:
        current = rates.current_rates(s)
        history = rates.rate_history(s, limit=50)
        sps = rates.seconds_per_step_table(s)
    return {"summary": data, "rates": current, "rate_history": history, "seconds_per_step": sps,
            "days": days, "providers": rates.providers(), "scopes": limits.scopes(),
            "timezones": _common_timezones()}


@pages.get("/spend")
def spend_page():
    days = int_arg("days", 30, 1, 366)
    return render("costs/spend.html", block="spend_body", nav="spend", title="Spend", **_spend_context(days))


@pages.get("/spend/limit-bar")
def limit_bar():
    with db.session() as s:
        statuses = limits.all_statuses(s)
    return render("costs/_limit_bar.html", limit_bars=statuses)


def _limit_form_body() -> dict:
    f = request.form
    body: dict = {"enabled": f.get("enabled") in ("on", "true", "1"),
                  "stop_running": f.get("stop_running") in ("on", "true", "1")}
    amount = (f.get("amount_usd") or "").strip()
    try:
        body["amount_usd"] = float(amount) if amount else 0.0
    except ValueError:
        raise BadRequest("amount_usd must be a number >= 0", extra={"field": "amount_usd"}) from None
    for key in ("period", "action", "timezone"):
        if f.get(key) is not None:
            body[key] = f.get(key).strip()
    return body


def _limit_fragment(provider: str, **extra):
    return render("costs/_provider_limit.html", limit_status=service.limit_status(provider),
                  timezones=_common_timezones(), **extra)


@pages.get("/spend/limits", defaults={"provider": None})
@pages.get("/spend/limits/<provider>")
def limit_form(provider):
    """The limit form of one scope; ``/spend/limits?provider=`` is the Spend page's selector."""
    return _limit_fragment(limits.validate_scope(provider or request.args.get("provider") or "all"))


@pages.post("/spend/limits/<provider>")
def save_limit_form(provider):
    limits.validate_scope(provider)
    try:
        limits.put_limit(provider, _limit_form_body())
    except BadRequest as exc:
        return _limit_fragment(provider, form_error=exc.detail), 422
    if not is_fragment_request():
        return redirect(url_for("costs_pages.spend_page"))
    return _limit_fragment(provider, saved=True)


def _rates_fragment(**extra):
    with db.session() as s:
        return render("costs/spend.html", block="rates_block", rates=rates.current_rates(s),
                      rate_history=rates.rate_history(s, limit=50),
                      seconds_per_step=rates.seconds_per_step_table(s), providers=rates.providers(), **extra)


@pages.post("/spend/rates")
def save_rate_form():
    f = request.form
    item = {k: f.get(k).strip() for k in ("provider", "hardware", "label", "note", "effective_from", "gpu_count",
                                          "vram_gb", "usd_per_hour") if (f.get(k) or "").strip()}
    return _save_rates(lambda: rates.put_rates([item]),
                       f"{item.get('provider')}/{item.get('hardware', 'default')} saved")


@pages.post("/spend/seconds-per-step")
def save_seconds_per_step():
    f = request.form
    key = (f.get("profile") or "default").strip()
    return _save_rates(lambda: rates.put_seconds_per_step({key: f.get("seconds_per_step", "").strip() or None}),
                       f"seconds per step for {key} saved")


def _save_rates(action, message: str):
    """Run ``action``; htmx gets the rates card back (422 + message on bad input), a plain
    form post is redirected (or gets the error page)."""
    if not is_fragment_request():
        action()
        return redirect(url_for("costs_pages.spend_page"))
    try:
        action()
    except BadRequest as exc:
        return _rates_fragment(rates_error=exc.detail), 422
    return _rates_fragment(rates_saved=message)


def _common_timezones() -> list[str]:
    return ["UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "America/New_York", "America/Chicago",
            "America/Denver", "America/Los_Angeles", "America/Sao_Paulo", "Asia/Tokyo", "Asia/Shanghai",
            "Asia/Kolkata", "Asia/Singapore", "Australia/Sydney"]


def init_app(app):
    app.extensions[provider_config.PRICING] = pricing  # what the Providers page shows and edits
    app.register_blueprint(api)
    app.register_blueprint(pages)
    app.jinja_env.globals.setdefault("running_cost", service.running_cost)

