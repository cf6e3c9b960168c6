"""Objects that belong to one process, looked up by key: after a fork the child makes its own.

A parent's object found in the child (a SQLite connection list, a lock file's descriptor) is
never used there, nor closed: it is kept in ``inherited`` so that nothing closes the parent's
descriptors behind its back when the child drops it.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, MutableMapping
from typing import Generic, Protocol, TypeVar


class _Owned(Protocol):
    pid: int


T = TypeVar("T", bound=_Owned)


class PerProcess(Generic[T]):
    def __init__(self, table: MutableMapping | None = None):
        self.table: MutableMapping = table if table is not None else {}
        self.inherited: list[T] = []
        self._lock = threading.Lock()

    def get(self, key, make: Callable[[object], T]) -> T:
        """This process's object for ``key``, made by ``make(key)`` the first time."""
        v = self.table.get(key)
        if v is None or v.pid != os.getpid():
            with self._lock:
                v = self.table.get(key)
                if v is None or v.pid != os.getpid():
                    if v is not None:
                        self.inherited.append(v)
                    v = self.table[key] = make(key)
        return v
