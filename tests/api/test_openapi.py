"""``GET /api/openapi.json`` (OpenAPI 3.1, built from the validating models) and the rendered
reference page ``/api/docs``."""
from __future__ import annotations

import re

import pydantic
import pytest

from stcloud.api import openapi
from stcloud.api.schemas import accounts, common, costs, flows, jobs, settings, webhooks, workers
from stcloud.api.schemas.jobs import SubmitBody
from stcloud.web import auth

pytestmark = pytest.mark.timeout(60)


def _doc(client) -> dict:
    r = client.get("/api/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    return r.get_json()


def test_every_api_route_is_in_the_document(app, client):
    doc = _doc(client)
    assert doc["openapi"] == "3.1.0"
    listed = {(path, method) for path, item in doc["paths"].items() for method in item}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.endpoint.startswith("s3."):
            continue
        path = re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in listed, (path, method)
    assert not any(p.startswith("/api/cloud/storage/") and "credentials" not in p for p in doc["paths"])
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_bodies_come_from_the_validating_models(client):
    doc = _doc(client)
    submit = doc["paths"]["/api/cloud/jobs/submit"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SubmitBody"}
    schemas = doc["components"]["schemas"]
    assert set(SubmitBody.model_json_schema()["required"]) == set(schemas["SubmitBody"]["required"])
    steps = schemas["TrainingConfig"]["properties"]["max_train_steps"]["anyOf"][0]
    assert steps["minimum"] == 1 and steps["maximum"] == 1_000_000
    cap = schemas["JobFields"]["properties"]["max_cost_usd"] if "JobFields" in schemas else \
        schemas["SubmitBody"]["properties"]["max_cost_usd"]
    assert cap["anyOf"][0]["maximum"] == 1_000_000
    consent = doc["paths"]["/api/cloud/settings/consent"]["put"]
    assert schemas["ConsentBody"]["properties"]["consent"]["enum"] == ["ask", "allow", "deny"]
    assert consent["responses"]["400"]["content"]["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    created = doc["paths"]["/api/cloud/users"]["post"]["responses"]["201"]["links"]
    assert created["GetUser"]["parameters"] == {"username": "$response.body#/user/username"}


def test_security_schemes_follow_the_route_kinds(client):
    doc = _doc(client)
    assert set(doc["components"]["securitySchemes"]) == {"bearerAuth", "sessionCookie", "workerToken"}
    assert doc["security"] == [{"bearerAuth": []}, {"sessionCookie": []}]
    assert doc["paths"]["/api/auth/login"]["post"]["security"] == []
    assert doc["paths"]["/api/openapi.json"]["get"]["security"] == []
    assert doc["paths"]["/api/workers/claim"]["post"]["security"] == [{"workerToken": []}]
    assert doc["paths"]["/api/webhooks/replicate"]["post"]["security"] == []
    assert "security" not in doc["paths"]["/api/cloud/jobs"]["get"]  # the document's default


def test_document_and_reference_page_are_public_with_auth_on(make_app):
    app = make_app(STCLOUD_AUTH="on")
    client = app.test_client()
    assert client.get("/api/cloud/jobs").status_code == 401
    assert auth.is_public_endpoint("api_docs.openapi_json")
    doc = _doc(client)
    r = client.get("/api/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "POST /api/cloud/jobs/submit" in html and 'id="schema-SubmitBody"' in html
    assert "&lt;= 1000000" in html  # the bounds are shown
    assert "<script" not in html.split("</head>")[1]  # rendered on the server, no script
    for item in doc["paths"].values():
        for op in item.values():
            assert f'id="{op["operationId"]}"' in html


def test_the_top_bar_links_the_reference(client):
    html = client.get("/jobs").get_data(as_text=True)
    assert 'href="/api/docs"' in html


# ---- every answer has a real schema -------------------------------------------------------

#: Request bodies documented as free-form objects, and why. (No answer is allowed to be.)
OPEN_BODIES = {
    ("/api/webhooks/replicate", "post"): "Replicate's prediction object: verified over the raw bytes, "
                                         "parsed by the adapter",
    ("/api/webhooks/{provider}", "post"): "a plugin provider's own event payload, parsed by its adapter",
    ("/api/cloud/providers/{name}", "put"): "the provider's declared settings: each provider checks its own",
    ("/api/cloud/config/validate", "post"): "{config: {...}} or the config itself: the answer lists the errors",
}


def _is_open(doc: dict, schema: dict) -> bool:
    """An object that says nothing about its members (``{}``, or no properties and extras allowed)."""
    schema = openapi._resolve(doc, schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return any(_is_open(doc, s) for s in schema[key])
    if schema.get("type") not in ("object", None):
        return False
    return not schema.get("properties") and schema.get("additionalProperties", True) is not False


def test_no_answer_is_an_open_object(client):
    doc = _doc(client)
    open_answers, open_bodies = [], set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for code, resp in op["responses"].items():
                for media, content in (resp.get("content") or {}).items():
                    if code.startswith("2") and "json" in media and _is_open(doc, content.get("schema", {})):
                        open_answers.append(f"{method.upper()} {path} {code} {media}")
            body = (op.get("requestBody") or {}).get("content", {}).get("application/json")
            if body and _is_open(doc, body["schema"]):
                open_bodies.add((path, method))
    assert open_answers == []
    assert open_bodies == set(OPEN_BODIES)


def test_model_names_are_unique():
    """The document keys its components by class name: two models of one name would share one."""
    names: dict[str, str] = {}
    for module in (accounts, common, costs, flows, jobs, settings, webhooks, workers):
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, pydantic.BaseModel) and obj.__module__ == module.__name__:
                assert names.setdefault(name, module.__name__) == module.__name__, name
