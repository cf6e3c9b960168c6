"""A page for a section whose feature is not set up yet (never a 404 in the nav)."""
from __future__ import annotations

from flask import Blueprint

from stcloud.web.htmx import render


def section(bp_name: str, url: str, endpoint: str, title: str, nav: str, message: str) -> Blueprint:
    bp = Blueprint(bp_name, __name__)

    def view():
        return render("placeholder.html", title=title, nav=nav, message=message)

    bp.add_url_rule(url, endpoint, view, methods=["GET"])
    return bp
