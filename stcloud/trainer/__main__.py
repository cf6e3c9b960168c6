"""``python -m stcloud.trainer --config config.json [--dataloader dl.json] [--output-dir DIR]``."""

from __future__ import annotations

import os
import sys


def _entry() -> int:
    # Signal handlers go in before numpy is imported, so an early SIGTERM is
    # still reported as "stage: cancelled" / exit 143 rather than a raw kill.
    from . import _cancel

    previous = _cancel.install()
    # Small matrices: one BLAS thread is faster and keeps runs reproducible.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from .core import main

        return main(sys.argv[1:], install_signals=False)
    finally:
        _cancel.restore(previous)


if __name__ == "__main__":
    sys.exit(_entry())
