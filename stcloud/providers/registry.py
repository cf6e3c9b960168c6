"""The one list of providers, filled from Python entry points (group ``stcloud.providers``).

Each entry point names a ``CloudTrainerService`` subclass (built with no arguments) or a
zero-argument factory returning one. Built-ins register the same way in ``pyproject.toml``;
a provider installed as its own package (``pip install stcloud-myprovider``) appears with no
edit to stcloud. A factory runs inside an app context, so it may read its settings from the
database; the adapter it returns never touches Flask or the database.

``get(name)`` builds the adapter anew each time, so changed settings apply at once.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points

from stcloud.errors import BadRequest
from stcloud.providers.base import AVAILABLE, CloudTrainerService

log = logging.getLogger(__name__)

GROUP = "stcloud.providers"

Factory = Callable[[], CloudTrainerService]

_loaded: dict[str, Factory] | None = None
_overrides: dict[str, Factory] = {}


def _as_factory(name: str, obj) -> Factory:
    if isinstance(obj, type):
        if not issubclass(obj, CloudTrainerService):
            raise TypeError(f"entry point {name!r} names {obj.__qualname__}, not a CloudTrainerService subclass")
        return obj
    if not callable(obj):
        raise TypeError(f"entry point {name!r} names {obj!r}, which is neither a class nor a factory")
    return obj


def _discover() -> dict[str, Factory]:
    found: dict[str, Factory] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found:
            log.error("provider %r is registered twice (%s); keeping the first", ep.name, ep.value)
            continue
        try:
            found[ep.name] = _as_factory(ep.name, ep.load())
        except Exception:  # a broken plugin must not take the app down
            log.exception("provider %r (%s) could not be loaded; it is not listed", ep.name, ep.value)
    return found


def _factories() -> dict[str, Factory]:
    global _loaded
    if _loaded is None:
        _loaded = _discover()
    return {**_loaded, **_overrides}


def reload() -> None:
    """Read the entry points again (after installing a provider package in this process)."""
    global _loaded
    _loaded = None


def names() -> tuple[str, ...]:
    """Every registered provider name, sorted."""
    return tuple(sorted(_factories()))


def validate_name(name) -> str:
    """``name`` if registered. Raises BadRequest listing the registered ones."""
    if not isinstance(name, str) or name not in _factories():
        raise BadRequest(f"unknown provider {name!r}; expected one of {', '.join(names())}",
                         extra={"field": "provider"})
    return name


def get(name: str) -> CloudTrainerService:
    """The adapter for ``name``, built with the current settings. Raises BadRequest (unknown)."""
    validate_name(name)
    service = _factories()[name]()
    if not isinstance(service, CloudTrainerService):
        raise TypeError(f"the factory of provider {name!r} returned {type(service).__name__}, "
                        "not a CloudTrainerService")
    return service


def maybe_get(name: str) -> CloudTrainerService | None:
    """Like ``get`` but None when the provider is unknown or its factory fails."""
    if name not in _factories():
        return None
    try:
        return get(name)
    except Exception:
        log.exception("provider %r could not be built", name)
        return None


def services() -> list[tuple[str, CloudTrainerService]]:
    """``(name, adapter)`` of every provider that can be built now, in name order."""
    pairs = ((n, maybe_get(n)) for n in names())
    return [(n, svc) for n, svc in pairs if svc is not None]


def available(name: str) -> CloudTrainerService:
    """The adapter of a provider that accepts jobs. Raises BadRequest (unknown, or listed
    but not available yet, e.g. "coming soon")."""
    service = get(name)
    if service.status != AVAILABLE:
        raise BadRequest(f"{service.label} is {service.status}: it does not accept jobs yet; choose one of "
                         f"{', '.join(n for n in names() if n != name)}", extra={"field": "provider"})
    return service


def _rank(svc: CloudTrainerService) -> int:
    if svc.status != AVAILABLE:
        return 2
    return 0 if svc.uploads_data else 1


def display_order() -> tuple[str, ...]:
    """The names as lists on pages show them: cloud providers, then self-hosted ones, then
    those not available yet; by name within each."""
    return tuple(n for n, _svc in sorted(services(), key=lambda p: (_rank(p[1]), p[0])))


def names_where(predicate: Callable[[CloudTrainerService], bool]) -> tuple[str, ...]:
    """Names of the buildable providers whose adapter satisfies ``predicate``."""
    return tuple(n for n, svc in services() if predicate(svc))


@contextlib.contextmanager
def override(name: str, factory: Factory) -> Iterator[None]:
    """Use ``factory`` for ``name`` inside the block (tests; embedding applications)."""
    previous = _overrides.get(name)
    _overrides[name] = factory
    try:
        yield
    finally:
        if previous is None:
            _overrides.pop(name, None)
        else:
            _overrides[name] = previous
