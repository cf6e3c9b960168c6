from stcloud.web.placeholder import section

bp = section("submit_pages", "/submit", "submit_page", "Submit a job", "submit",
             "Submitting is not configured yet.")


def init_app(app):
    app.register_blueprint(bp)
