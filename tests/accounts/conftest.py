import pytest


@pytest.fixture
def secure_app(make_app):
    """Auth on, as a real install starts (the suite's default is off)."""
    return make_app(STCLOUD_AUTH="on")
