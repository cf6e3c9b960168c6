from stcloud.web.placeholder import section

bp = section("workers_pages", "/workers", "workers_page", "Workers", "workers",
             "No workers are configured yet.")


def init_app(app):
    app.register_blueprint(bp)
