from stcloud.web.placeholder import section

bp = section("snapshots_pages", "/configs", "configs_page", "Configs", "configs",
             "Config snapshots are not configured yet.")


def init_app(app):
    app.register_blueprint(bp)
