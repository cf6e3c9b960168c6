from stcloud.web.placeholder import section

bp = section("costs_pages", "/spend", "spend_page", "Spend", "spend",
             "Cost tracking is not configured yet.")


def init_app(app):
    app.register_blueprint(bp)
