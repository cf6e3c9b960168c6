"""``GET /api/openapi.json`` (OpenAPI 3.1, built from the validating models) and the rendered
reference page ``/api/docs``."""
from __future__ import annotations

import re

import pytest

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
