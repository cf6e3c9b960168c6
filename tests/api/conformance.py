"""Check a real answer against the schema ``GET /api/openapi.json`` documents for it (for
routes the fuzzer cannot reach with valid state: a job awaiting approval, a checkpoint to
resume from, a pipeline, a Slurm cluster)."""
from __future__ import annotations

import jsonschema
from flask import Flask

from stcloud.api import openapi
from stcloud.web.api_docs import document


def schema_of(app: Flask, path: str, method: str, status: int, media: str = "application/json") -> dict:
    """The documented schema of ``method path``'s ``status`` answer (path as requested)."""
    endpoint, _ = app.url_map.bind("localhost").match(path, method=method.upper())
    rule = next(r for r in app.url_map.iter_rules(endpoint) if method.upper() in r.methods)
    template, _ = openapi.path_of(rule.rule)
    with app.test_request_context():
        doc = document()
    op = doc["paths"][template][method.lower()]
    response = op["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {template} does not document a {status} answer"
    schema = response["content"][media]["schema"]
    return {**schema, "components": doc["components"]}


def assert_conforms(app: Flask, response, *, path: str | None = None, method: str | None = None):
    """``response`` (a Flask test response) matches its documented schema; returns its JSON."""
    request = response.request
    path = path or request.path
    method = method or request.method
    body = response.get_json()
    assert body is not None, f"{method} {path}: not a JSON answer ({response.status_code})"
    schema = schema_of(app, path, method, response.status_code, response.mimetype)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, f"{method} {path} {response.status_code}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message[:300]}" for e in errors[:5])
    return body
