"""pytest plugin for ceph's s3-tests: append a path to the endpoint the suite builds.

s3-tests builds ``http(s)://host:port`` from its config; stcloud serves S3 below
``/api/cloud/storage``. Loaded with ``-p s3tests_endpoint`` (``bench/`` on PYTHONPATH) by
``bench/s3_conformance.py``; the path comes from ``S3TESTS_ENDPOINT_PATH``. The suite itself is
not changed.
"""
from __future__ import annotations

import os


def pytest_configure(config):
    path = os.environ.get("S3TESTS_ENDPOINT_PATH", "").rstrip("/")
    if not path:
        return
    import s3tests.functional as suite

    original = suite.configure

    def configure():
        original()
        suite.config.default_endpoint += path

    suite.configure = configure
