"""Provider name -> factory. A factory runs inside an app context and builds the adapter
with its settings (token, base URL, model) so the adapter itself never touches Flask or the db.
"""
from __future__ import annotations

from typing import Callable

from stcloud.errors import BadRequest
from stcloud.providers.base import CloudTrainerService

PROVIDER_NAMES = ("replicate", "worker", "local")

_factories: dict[str, Callable[[], CloudTrainerService | None]] = {}


def register(name: str, factory: Callable[[], CloudTrainerService | None]) -> None:
    _factories[name] = factory


def names() -> tuple[str, ...]:
    return PROVIDER_NAMES


def validate_name(name: str) -> str:
    if name not in PROVIDER_NAMES:
        raise BadRequest(f"unknown provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}")
    return name


def has_factory(name: str) -> bool:
    return name in _factories


def get(name: str) -> CloudTrainerService:
    """The adapter for ``name``. Raises BadRequest (unknown) or the factory's NotConfigured."""
    validate_name(name)
    factory = _factories.get(name)
    if factory is None:
        raise BadRequest(f"provider {name!r} is not available in this installation")
    service = factory()
    if service is None:
        raise BadRequest(f"provider {name!r} is not configured")
    return service


def maybe_get(name: str) -> CloudTrainerService | None:
    """Like ``get`` but None when the provider is unknown or unconfigured (no remote side)."""
    factory = _factories.get(name)
    if factory is None:
        return None
    try:
        return factory()
    except Exception:
        return None


def clear() -> None:
    """Tests only."""
    _factories.clear()
