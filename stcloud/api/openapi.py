"""The OpenAPI 3.1 document of the REST API, built from the app's URL map and the
``@operation`` metadata on each view (``stcloud.api.spec``): the request models are the ones
the views validate with, so the document cannot drift from what the server accepts."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pydantic
from flask import Flask

from stcloud.api import spec
from stcloud.api.schemas.common import Problem

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
#: Problem answers every operation may give (SPEC §11).
PROBLEMS = {400: "Bad input (names the field)", 401: "Not signed in", 403: "Not allowed for this role",
            404: "Not found", 405: "Method not allowed", 409: "Conflict (state, consent, idempotency)",
            413: "Too large", 422: "Validation failed", 429: "Too many requests",
            502: "Provider error", 503: "Unavailable"}
_CONVERTER = re.compile(r"<(?:(?P<conv>[a-z]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_PARAM_TYPES = {"int": {"type": "integer"}, "float": {"type": "number"}, "path": {"type": "string"},
                "uuid": {"type": "string", "format": "uuid"}}

#: endpoint -> "public" | "machine" | "user"; given by the web layer (which knows the markers).
Classifier = Callable[[str], str]


class _Schemas:
    """Collects model schemas into ``components.schemas`` and answers ``$ref``s."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}
        self._seen: dict[tuple[type, str], str] = {}

    def ref(self, model: type[pydantic.BaseModel], mode: str = "validation") -> dict:
        key = (model, mode)
        if key not in self._seen:
            schema = model.model_json_schema(ref_template=REF, mode=mode)
            for name, sub in schema.pop("$defs", {}).items():
                self.components.setdefault(name, sub)
            name = model.__name__
            if self.components.get(name, schema) != schema:  # same name, other shape (mode)
                name = f"{name}{mode.title()}"
            self.components[name] = schema
            self._seen[key] = name
        return {"$ref": REF.format(model=self._seen[key])}


def path_of(rule: str) -> tuple[str, list[dict]]:
    params = []

    def sub(m: re.Match) -> str:
        params.append({"name": m["name"], "in": "path", "required": True,
                       "schema": dict(_PARAM_TYPES.get(m["conv"] or "", {"type": "string"}))})
        return "{" + m["name"] + "}"

    return _CONVERTER.sub(sub, rule), params


def _query_params(model: type[pydantic.BaseModel]) -> list[dict]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        param = {"name": name, "in": "query", "required": name in required,
                 "schema": {k: v for k, v in prop.items() if k not in ("title", "description")}}
        if prop.get("description"):
            param["description"] = prop["description"]
        out.append(param)
    return out


def _response(value: Any, schemas: _Schemas) -> dict:
    description = "OK"
    if isinstance(value, tuple):
        value, description = value
    if value is None:
        return {"description": description}
    if isinstance(value, str):
        return {"description": description, "content": {value: {"schema": {"type": "string"}}}}
    if isinstance(value, dict):  # several media types: {media type: model or None}
        return {"description": description, "content": {
            media: {"schema": schemas.ref(model, "serialization") if model is not None else {"type": "string"}}
            for media, model in value.items()}}
    return {"description": description, "content": {"application/json": {"schema": schemas.ref(value, "serialization")}}}


def _operation(method: str, endpoint: str, op: spec.Operation | None, kind: str, params: list[dict],
               schemas: _Schemas) -> dict:
    op = op or spec.Operation()
    doc: dict[str, Any] = {"operationId": f"{endpoint.replace('.', '_')}_{method}",
                           "tags": list(op.tags) or [endpoint.split(".")[0]]}
    if op.summary:
        doc["summary"] = op.summary
    if op.description:
        doc["description"] = op.description
    parameters = list(params) + (_query_params(op.query) if op.query else [])
    if parameters:
        doc["parameters"] = parameters
    if op.body is not None and method in ("post", "put", "patch", "delete"):
        doc["requestBody"] = {"required": op.body_required,
                              "content": {"application/json": {"schema": schemas.ref(op.body)}}}
    responses = {str(code): _response(value, schemas) for code, value in sorted(op.responses.items())}
    if not op.responses:
        responses["200"] = {"description": "OK (undocumented shape)",
                            "content": {"application/json": {"schema": {}}}}
    problem = {"application/problem+json": {"schema": schemas.ref(Problem, "serialization")}}
    for code, text in PROBLEMS.items():
        responses.setdefault(str(code), {"description": text, "content": problem})
    doc["responses"] = responses
    if op.public or kind == "public":
        doc["security"] = []
    elif kind == "machine":
        doc["security"] = [] if op.security == "webhook" else [{"workerToken": []}]
    if op.deprecated:
        doc["deprecated"] = True
    return doc


def _add_links(app: Flask, paths: dict) -> None:
    """Resolve each ``Operation.links`` (endpoint, method) to the target's operationId."""
    ids = {}
    for item in paths.values():
        for method, doc in item.items():
            ids[(doc["x-endpoint"], method)] = doc["operationId"]
    for item in paths.values():
        for doc in item.values():
            op = spec.of(app.view_functions.get(doc.pop("x-endpoint")))
            for code, links in (op.links if op else {}).items():
                response = doc["responses"].get(str(code))
                if response is None:
                    continue
                response["links"] = {name: {"operationId": ids[(endpoint, target_method)], "parameters": params}
                                     for name, (endpoint, target_method, params) in links.items()
                                     if (endpoint, target_method) in ids}


def build(app: Flask, classify: Classifier, *, prefix: str = "/api/",
          exclude: Callable[[str], bool] = lambda endpoint: False) -> dict:
    """The document for every rule under ``prefix`` (``exclude(endpoint)`` leaves some out)."""
    schemas = _Schemas()
    paths: dict[str, dict] = {}
    used: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(prefix) or exclude(rule.endpoint):
            continue
        path, params = path_of(rule.rule)
        op = spec.of(app.view_functions.get(rule.endpoint))
        kind = classify(rule.endpoint)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            doc = _operation(method.lower(), rule.endpoint, op, kind, params, schemas)
            while doc["operationId"] in used:  # one endpoint on two rules
                doc["operationId"] += "_"
            used.add(doc["operationId"])
            doc["x-endpoint"] = rule.endpoint  # for links; removed again below
            paths.setdefault(path, {})[method.lower()] = doc
    _add_links(app, paths)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "stcloud REST API", "version": app.config.get("STCLOUD_VERSION", "1"),
                 "description": "Training jobs on Replicate, self-hosted workers and Slurm. Errors are "
                                "application/problem+json (SPEC §11); a validation error names each "
                                "bad field in `errors`."},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "an API key (stc_...) or the bootstrap STCLOUD_ADMIN_TOKEN"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": app.config.get("SESSION_COOKIE_NAME", "session"),
                                  "description": "the session of POST /api/auth/login"},
                "workerToken": {"type": "http", "scheme": "bearer", "description": "a worker's token (worker API)"},
            },
        },
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
    }


# ---- the reference page's view of the document -----------------------------------------------

_CONSTRAINTS = (("minimum", ">= {}"), ("exclusiveMinimum", "> {}"), ("maximum", "<= {}"),
                ("exclusiveMaximum", "< {}"), ("minLength", "at least {} chars"),
                ("maxLength", "at most {} chars"), ("minItems", "at least {} items"),
                ("maxItems", "at most {} items"), ("pattern", "matches {}"))


def _resolve(doc: dict, schema: dict) -> dict:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return doc["components"]["schemas"].get(ref.rsplit("/", 1)[1], {})
    return schema


def type_text(doc: dict, schema: dict) -> str:
    """``integer``, ``string | null``, ``list of Dataset``, ``"ask" | "allow"``..."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "enum" in schema:
        return " | ".join(f'"{v}"' for v in schema["enum"])
    if "const" in schema:
        return f'"{schema["const"]}"'
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(type_text(doc, s) for s in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {type_text(doc, schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_text(doc, schema['additionalProperties'])}"
    return kind


def _constraints(schema: dict) -> list[str]:
    out = []
    for variant in [schema, *schema.get("anyOf", [])]:
        out += [text.format(variant[key]) for key, text in _CONSTRAINTS if key in variant]
    return out


def fields(doc: dict, schema: dict) -> list[dict]:
    """The members of an object schema, for a table: name, type, required, rules, default."""
    schema = _resolve(doc, schema)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        out.append({"name": name, "type": type_text(doc, prop), "required": name in required,
                    "rules": ", ".join(_constraints(prop)), "default": prop.get("default"),
                    "description": prop.get("description", "")})
    return out


def operations(doc: dict) -> list[dict]:
    """Every operation of ``doc`` grouped by tag: ``[{tag, ops: [...]}]``."""
    groups: dict[str, list] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            body = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
            responses = []
            for code, resp in op["responses"].items():
                content = resp.get("content") or {}
                media = next(iter(content), None)
                schema = content.get(media, {}).get("schema", {}) if media else {}
                responses.append({"code": code, "description": resp.get("description", ""), "media": media,
                                  "type": type_text(doc, schema) if schema else "",
                                  "problem": media == "application/problem+json"})
            security = op.get("security", doc.get("security"))
            groups.setdefault(op["tags"][0], []).append({
                "id": op["operationId"], "method": method.upper(), "path": path,
                "summary": op.get("summary", ""), "description": op.get("description", ""),
                "parameters": op.get("parameters", []),
                "body": {"type": type_text(doc, body), "fields": fields(doc, body)} if body else None,
                "responses": responses,
                "auth": "none" if not security else " or ".join(next(iter(s)) for s in security),
            })
    return [{"tag": tag, "ops": ops} for tag, ops in sorted(groups.items())]
