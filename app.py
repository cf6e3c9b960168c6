"""Entry point for ``flask --app app run`` and ``gunicorn 'app:create_app()'``."""
from stcloud import create_app

__all__ = ["create_app"]
