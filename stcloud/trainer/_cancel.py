"""Cooperative cancellation via SIGTERM/SIGINT (no third-party imports).

The signal handler only records the signal; the trainer polls
:func:`requested` between images, between steps and while sleeping, so a
checkpoint that is being written is always finished (or never renamed into
place) before the process exits.
"""

from __future__ import annotations

import signal

_state: dict[str, int | None] = {"signum": None}


def _handler(signum, frame):  # noqa: ARG001 - signal handler signature
    if _state["signum"] is None:
        _state["signum"] = signum


def install() -> dict:
    """Install handlers for SIGTERM and SIGINT; returns the previous handlers."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, _handler)
        except (ValueError, OSError):  # not the main thread / unsupported
            pass
    return previous


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):
            pass


def requested() -> int | None:
    """The signal number that asked us to stop, or None."""
    return _state["signum"]


def reset() -> None:
    _state["signum"] = None
