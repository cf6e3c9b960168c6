from stcloud.web.placeholder import section

bp = section("settings_pages", "/settings", "settings_page", "Settings", "settings",
             "Settings are not configured yet.")


def init_app(app):
    app.register_blueprint(bp)
