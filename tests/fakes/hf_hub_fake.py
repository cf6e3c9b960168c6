"""A small fake of the Hugging Face Hub's repo + commit API, enough for the official
``HfApi(endpoint=...)`` to create a repo and commit files to it.

It answers ``uploadMode: "regular"`` to every preupload request, so the client sends the file
contents inline in the commit (no LFS, no Xet). Files are kept in memory:
``fake.repos["owner/name"]["files"]["path"] -> bytes``.

    with HubFake(token="hf_test") as hub:
        HfApi(endpoint=hub.url, token="hf_test").create_repo("me/model")
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading

from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


class HubFake:
    def __init__(self, token: str = "hf_test_token"):
        self.token = token
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.app = self._build()
        self._server = None
        self._thread = None
        self.url = ""

    # -- lifecycle
    def start(self) -> HubFake:
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- app
    def _authorized(self) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.token}"

    def _build(self) -> Flask:
        app = Flask("hf_hub_fake")

        @app.before_request
        def _log_and_auth():
            self.requests.append((request.method, request.path))
            if not self._authorized():
                return jsonify({"error": "Invalid credentials in Authorization header"}), 401
            return None

        @app.post("/api/repos/create")
        def create_repo():
            body = request.get_json(force=True)
            name = body.get("name")
            owner = body.get("organization") or "user"
            if not name:
                return jsonify({"error": "name is required"}), 400
            repo_id = f"{owner}/{name}"
            with self._lock:
                if repo_id in self.repos:
                    return jsonify({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}), 409
                self.repos[repo_id] = {"private": bool(body.get("private")), "files": {}, "commits": []}
            return jsonify({"url": f"{self.url}/{repo_id}", "name": repo_id})

        @app.get("/api/models/<ns>/<name>")
        @app.get("/api/models/<ns>/<name>/revision/<rev>")
        def repo_info(ns, name, rev="main"):
            repo = self.repos.get(f"{ns}/{name}")
            if repo is None:
                return Response(json.dumps({"error": "Repository not found"}), 404,
                                headers={"X-Error-Code": "RepoNotFound"}, mimetype="application/json")
            sha = repo["commits"][-1] if repo["commits"] else "0" * 40
            return jsonify({"id": f"{ns}/{name}", "sha": sha, "private": repo["private"],
                            "siblings": [{"rfilename": p} for p in sorted(repo["files"])]})

        @app.post("/api/models/<ns>/<name>/preupload/<rev>")
        def preupload(ns, name, rev):
            if f"{ns}/{name}" not in self.repos:
                return Response(json.dumps({"error": "Repository not found"}), 404,
                                headers={"X-Error-Code": "RepoNotFound"}, mimetype="application/json")
            files = request.get_json(force=True).get("files", [])
            return jsonify({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                       "oid": None} for f in files]})

        @app.post("/api/models/<ns>/<name>/commit/<rev>")
        def commit(ns, name, rev):
            repo_id = f"{ns}/{name}"
            repo = self.repos.get(repo_id)
            if repo is None:
                return Response(json.dumps({"error": "Repository not found"}), 404,
                                headers={"X-Error-Code": "RepoNotFound"}, mimetype="application/json")
            added = {}
            for line in request.get_data().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item.get("key") == "file":
                    value = item["value"]
                    if value.get("encoding") != "base64":
                        return jsonify({"error": "only base64 content is supported by the fake"}), 400
                    added[value["path"]] = base64.b64decode(value["content"])
                elif item.get("key") == "lfsFile":
                    return jsonify({"error": "the fake never asks for LFS uploads"}), 400
            oid = hashlib.sha1(json.dumps(sorted(added)).encode() + str(len(repo["commits"])).encode()).hexdigest()
            with self._lock:
                repo["files"].update(added)
                repo["commits"].append(oid)
            return jsonify({"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                            "pullRequestUrl": None})

        @app.get("/<ns>/<name>/resolve/<rev>/<path:path>")
        def resolve(ns, name, rev, path):
            repo = self.repos.get(f"{ns}/{name}")
            if repo is None or path not in repo["files"]:
                return jsonify({"error": "Entry not found"}), 404
            return Response(repo["files"][path], mimetype="application/octet-stream")

        return app
