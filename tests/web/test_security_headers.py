"""Security headers on every page, and templates without inline script (the CSP forbids it)."""
from __future__ import annotations

import re

import pytest

from stcloud import resources
from stcloud.web import auth

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)
HANDLER_ATTR = re.compile(r"\son[a-z]+\s*=", re.I)
EVAL_HTMX = re.compile(r"hx-on|hx-vals=['\"]\s*js:|hx-trigger=\"[^\"]*\[", re.I)
CSS_IN_TRIGGER = re.compile(r"\b(from|target):\S+?(?=[,\"\s])")  # selectors, not filters


def pages(app) -> list[str]:
    return sorted(r.rule for r in app.url_map.iter_rules()
                  if "GET" in r.methods and not r.arguments and not r.rule.startswith("/api/")
                  and r.endpoint != "static" and r.endpoint.split(".")[0] not in auth._machine_blueprints)


def test_every_page_has_the_security_headers(app, client):
    checked = 0
    for path in pages(app):
        resp = client.get(path)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert resp.headers["Referrer-Policy"] == "same-origin", path
        if resp.mimetype != "text/html":
            continue
        checked += 1
        csp = dict(part.strip().split(" ", 1) for part in resp.headers["Content-Security-Policy"].split(";"))
        assert csp["script-src"] == "'self'" and csp["frame-ancestors"] == "'none'", path
        assert "unsafe" not in csp["script-src"] and "unsafe" not in csp["default-src"]
        assert resp.headers["X-Frame-Options"] == "DENY", path
        html = resp.get_data(as_text=True)
        assert not INLINE_SCRIPT.search(html), (path, INLINE_SCRIPT.search(html).group(0))
        assert not HANDLER_ATTR.search(re.sub(r"<script.*?</script>", "", html, flags=re.S)), path
    assert checked >= 8


def test_api_answers_carry_nosniff_but_no_page_policy(client):
    resp = client.get("/api/cloud/jobs")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in resp.headers


@pytest.mark.parametrize("template", sorted(str(p.relative_to(resources.TEMPLATES))
                                            for p in resources.TEMPLATES.rglob("*.html")))
def test_templates_have_no_inline_script(template):
    text = (resources.TEMPLATES / template).read_text()
    assert not INLINE_SCRIPT.search(text), INLINE_SCRIPT.search(text).group(0)
    assert not HANDLER_ATTR.search(text), HANDLER_ATTR.search(text).group(0)
    bare = CSS_IN_TRIGGER.sub("", text)
    assert not EVAL_HTMX.search(bare), EVAL_HTMX.search(bare).group(0)  # htmx would need eval
