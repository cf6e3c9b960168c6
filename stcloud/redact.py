"""What counts as a secret in a training config, and how to keep secrets out of what people
and git see. Pure: no Flask, no database.

- ``strip_secrets``: removes them (config snapshots committed to git).
- ``restore_secrets``: puts them back from the stored config (exact re-run).
- ``redact``: masks them with ``[redacted]`` (API answers and pages show the shape).
"""
from __future__ import annotations

import copy
import re
from typing import Any

REDACTED = "[redacted]"

# Substrings of a key (lower-case, separators removed) that mark a secret. "token" is
# matched unless it is part of "tokenizer"/"tokenise" (``tokenizer_max_length`` is a
# training setting a snapshot must keep).
_SECRET_PARTS = ("secret", "password", "passwd", "passphrase", "credential", "privatekey",
                 "accesskey", "apikey", "sessionkey", "authorization", "cookie")
_TOKEN = re.compile(r"token(?!i[sz])")
_SECRET_SEGMENTS = {"pwd", "auth"}
# Values that are secrets whatever key holds them (Replicate, Hugging Face, webhook, AWS,
# GitHub and OpenAI-style keys).
_SECRET_VALUE = re.compile(
    r"^(r8_[A-Za-z0-9]{16,}|hf_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9+/=]{8,}|(AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})$")


def is_secret_key(key: Any) -> bool:
    k = str(key).lower()
    compact = re.sub(r"[^a-z0-9]", "", k)
    if any(part in compact for part in _SECRET_PARTS) or _TOKEN.search(compact):
        return True
    return any(seg in _SECRET_SEGMENTS for seg in re.split(r"[^a-z0-9]+", k))


def _secret_value(value: Any) -> bool:
    return isinstance(value, str) and bool(_SECRET_VALUE.match(value.strip()))


def _strip_entry(key: Any, value: Any) -> bool:
    """Numbers, booleans and nulls under a secret-looking key (``max_token_length: 77``)
    are settings, not secrets; strings and containers under such a key are removed."""
    if _secret_value(value):
        return True
    if value is None or isinstance(value, (bool, int, float)):
        return False
    return is_secret_key(key)


def strip_secrets(obj: Any) -> Any:
    """A copy of ``obj`` without secrets: secret dict entries are removed (at any depth,
    including ``publishing_config`` entries); list items that are token-shaped strings are
    replaced by ``[redacted]`` (so positions stay aligned for ``restore_secrets``)."""
    if isinstance(obj, dict):
        return {k: strip_secrets(v) for k, v in obj.items() if not _strip_entry(k, v)}
    if isinstance(obj, list):
        return [REDACTED if _secret_value(v) else strip_secrets(v) for v in obj]
    return obj


def restore_secrets(committed: Any, original: Any) -> Any:
    """``committed`` (as stored in a snapshot) with the secrets ``strip_secrets`` removed put
    back from ``original`` (the job's stored config). Nothing else is taken from
    ``original``: the snapshot stays the source of truth for every setting."""
    if isinstance(committed, dict) and isinstance(original, dict):
        out = {k: restore_secrets(v, original.get(k)) for k, v in committed.items()}
        for k, v in original.items():
            if k not in committed and _strip_entry(k, v):
                out[k] = v
        return out
    if isinstance(committed, list) and isinstance(original, list):
        # Items pair up by position, but only an item that *is* the stored one minus its
        # secrets gets them back: the submit path may append entries (publishing settings),
        # and a secret must never land in a different entry.
        out = []
        for i, c in enumerate(committed):
            o = original[i] if i < len(original) else None
            if c == REDACTED and _secret_value(o):
                out.append(o)
            elif isinstance(c, (dict, list)) and strip_secrets(o) == c:
                out.append(restore_secrets(c, o))
            else:
                out.append(c)
        return out
    return committed




def redact(obj: Any) -> Any:
    """A copy of ``obj`` with every secret value replaced by ``[redacted]``."""
    if isinstance(obj, dict):
        return {k: (REDACTED if _strip_entry(k, v) else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [REDACTED if _secret_value(v) else redact(v) for v in obj]
    return obj


def split_secrets(obj: Any) -> tuple[Any, list[tuple[list, Any]]]:
    """``(redact(obj), [(path, value), ...])``: the shape people may see, and every secret
    with where it was (a path of keys and list indexes) so ``join_secrets`` can put it back."""
    found: list[tuple[list, Any]] = []

    def walk(o: Any, path: list) -> Any:
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                if _strip_entry(k, v):
                    found.append((path + [k], v))
                    out[k] = REDACTED
                else:
                    out[k] = walk(v, path + [k])
            return out
        if isinstance(o, list):
            out_list = []
            for i, v in enumerate(o):
                if _secret_value(v):
                    found.append((path + [i], v))
                    out_list.append(REDACTED)
                else:
                    out_list.append(walk(v, path + [i]))
            return out_list
        return o

    return walk(obj, []), found


def join_secrets(obj: Any, found: list) -> Any:
    """A copy of ``obj`` (as ``split_secrets`` left it) with the secrets back where they were.
    A place that no longer holds ``[redacted]`` (changed since) is left as it is."""
    out = copy.deepcopy(obj)
    for path, value in found:
        parent = out
        try:
            for step in path[:-1]:
                parent = parent[step]
            if parent[path[-1]] == REDACTED:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    return out
