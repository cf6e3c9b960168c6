"""``python -m bench [--quick] [name ...]``: run every ``bench/*_bench.py`` (or the named ones),
then print one table: each figure beside its peer from the same run, and the ratio.

Each module exposes ``main(argv: list[str] | None = None) -> int``; its own arguments can be
passed after ``--`` (``python -m bench webhooks -- --duration 3``). ``--quick`` runs each with
smaller sizes (``QUICK_ARGS``). ``make test`` never runs these.
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from bench import report

HERE = Path(__file__).resolve().parent
QUICK_ARGS = {"s3_bench": ["--size-mib", "32", "--big-mib", "0", "--repeat", "1"]}  # others take --quick


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*_bench.py"))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1:]
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    names = discover()
    wanted = [a if a.endswith("_bench") else f"{a}_bench" for a in args] or names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    failed = 0
    for name in wanted:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            quick_args = QUICK_ARGS.get(name, ["--quick"]) if quick else []
            rc = importlib.import_module(f"bench.{name}").main(quick_args + extra)
        except Exception as exc:  # one broken benchmark must not hide the others
            print(f"{name}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            rc = 1
        print(f"== {name}: {'ok' if not rc else f'failed ({rc})'} in {time.monotonic() - started:.1f} s", flush=True)
        failed += bool(rc)
    if report.ROWS:
        print()
        print(report.table(report.ROWS))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
