"""One predicate decides fragment vs full page (STYLE pitfall 3)."""
from __future__ import annotations

from flask import make_response, render_template, request
from jinja2_fragments.flask import render_block


def is_fragment_request() -> bool:
    """An htmx request that swaps part of a page. History restores and boosted
    navigations get the full page."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
        and request.headers.get("HX-Boosted") != "true"
    )


def render(template: str, block: str | None = None, status: int = 200, headers: dict | None = None, **ctx):
    """Render the whole page, or only ``block`` of it for an htmx fragment request."""
    if block and is_fragment_request():
        body = render_block(template, block, **ctx)
    else:
        body = render_template(template, **ctx)
    resp = make_response(body, status)
    resp.headers.add("Vary", "HX-Request")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp
