from stcloud.web.placeholder import section

bp = section("storage_pages", "/storage", "storage_page", "Storage", "storage",
             "The built-in S3 endpoint is not configured yet.")


def init_app(app):
    app.register_blueprint(bp)
