"""Compare runs: ``GET /api/cloud/jobs/compare?ids=a,b,…[&diff=a,b]`` and the page
``GET /jobs/compare?ids=…`` (loss curves overlaid, a summary table, the samples side by side
per checkpoint step, the config diff)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from stcloud.api import validation
from stcloud.api.schemas import jobs as schemas
from stcloud.api.spec import operation
from stcloud.jobs import compare as compare_service
from stcloud.web.htmx import render

api = Blueprint("compare_api", __name__, url_prefix="/api/cloud/jobs")
pages = Blueprint("compare_pages", __name__)


def _args() -> tuple[list[str], list[str] | None]:
    ids = compare_service.parse_ids(request.args.getlist("ids"))
    raw_pair = ",".join(request.args.getlist("diff"))  # diff=a,b or diff=a&diff=b (the page's form)
    return ids, ([p.strip() for p in raw_pair.split(",")] if raw_pair else None)


@api.get("/compare")
@operation(query=schemas.CompareQuery, summary="Loss series and config diff of several jobs", tags=["jobs"],
           responses={200: schemas.Comparison})
def compare_jobs():
    validation.query(schemas.CompareQuery)
    ids, pair = _args()
    return jsonify(compare_service.compare(ids, pair))


@pages.get("/jobs/compare")
def compare_page():
    if not any(v.strip() for v in request.args.getlist("ids")):  # a bare visit: say how to start
        return render("jobs/compare.html", data=None, ids=[], pair=[], nav="jobs")
    ids, pair = _args()
    data = compare_service.compare(ids, pair)
    return render("jobs/compare.html", data=data, ids=ids, pair=data["diff"]["jobs"],
                  samples=compare_service.sample_grid(data["jobs"]), nav="jobs")


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
