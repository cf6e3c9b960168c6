"""Upload files to the Hugging Face Hub with the official client. No Flask, no db.

``HfApi(endpoint=...)`` is given the endpoint explicitly (``HF_ENDPOINT`` read at call time):
``huggingface_hub`` reads its environment once at import.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from stcloud import net

# huggingface_hub shares one HTTP client per process; it is rebuilt when the proxies change.
_client_lock = threading.Lock()
_client_proxies: list[net.Proxies] = []


def _use_proxies(proxies: net.Proxies) -> None:
    import huggingface_hub  # ~0.5 s to import: only when publishing to the Hub

    with _client_lock:
        if _client_proxies != [proxies]:
            huggingface_hub.set_client_factory(net.hf_client_factory(proxies))
            _client_proxies[:] = [proxies]


class HubError(Exception):
    pass


def upload_files(repo_id: str, files: list[tuple[Path, str]], *, token: str, private: bool = False,
                 endpoint: str | None = None, message: str = "Upload from stcloud",
                 proxies: net.Proxies | None = None) -> str:
    """Create ``repo_id`` if needed and commit ``files`` [(local path, path in repo)] in one
    commit. Returns the commit URL. Raises HubError."""
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise HubError("huggingface_hub is not installed") from exc
    _use_proxies(proxies or net.Proxies.from_env())
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for path, name in files]
        info = api.create_commit(repo_id, operations=ops, commit_message=message, repo_type="model")
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise HubError(f"Hugging Face Hub refused the upload to {repo_id}"
                       + (f" (HTTP {status})" if status else "") + f": {str(exc).splitlines()[0][:300]}") from exc
    except (OSError, ValueError) as exc:
        raise HubError(f"upload to {repo_id} failed: {exc}") from exc
    return str(info.commit_url)


def file_url(repo_id: str, path: str, endpoint: str | None = None) -> str:
    base = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return f"{base}/{repo_id}/resolve/main/{path}"
