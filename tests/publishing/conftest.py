"""Delivery fixtures: a stand-in for provider output URLs, moto's S3 server, the Hub fake."""
from __future__ import annotations

import threading

import pytest
from flask import Flask, Response
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.storage.conftest import moto_server  # noqa: F401  (re-exported fixture)


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


class FileHost:
    """Serves ``files[name]`` at ``/<name>``; names in ``broken`` answer 500."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.broken: set[str] = set()
        app = Flask("filehost")

        @app.get("/<path:name>")
        def serve(name):
            if name in self.broken or name not in self.files:
                return Response("nope", status=500 if name in self.broken else 404)
            return Response(self.files[name], mimetype="application/octet-stream")

        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._thread.join(5)


@pytest.fixture
def filehost():
    host = FileHost()
    yield host
    host.stop()


@pytest.fixture
def hub():
    from tests.fakes.hf_hub_fake import HubFake

    with HubFake(token="hf_test_token") as fake:
        yield fake
