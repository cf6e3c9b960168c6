from stcloud.web.placeholder import section

bp = section("providers_pages", "/providers", "providers_page", "Providers", "providers",
             "No provider is configured yet.")


def init_app(app):
    app.register_blueprint(bp)
