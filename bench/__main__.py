"""``python -m bench [--quick] [--markdown FILE] [name ...]``: run every benchmark (or the named
ones), then print one table: each figure, its peer measured in the same run, the ratio, the
goal and whether it is met.

A benchmark is a module ``bench/<name>_bench.py`` with ``main(argv: list[str] | None) -> int``
that accepts ``--quick`` (a short run: smaller sizes, fewer rounds) and appends one
``report.Row`` per figure to ``report.ROWS`` (set ``goal`` and ``met`` where the issue sets a
goal). ``BENCHES`` fixes the order they run and print in; a ``*_bench.py`` not listed there
still runs, after them. Its own arguments go after ``--`` (``python -m bench webhooks --
--duration 3``); a module that takes other quick arguments than ``--quick`` lists them in
``QUICK_ARGS``. ``make test`` never runs these (tests/test_bench.py runs the smallest sizes
once, for correctness only).
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from bench import report

HERE = Path(__file__).resolve().parent
# The order of the table: the job list and logs, the dashboard under load (issue 16 goals 1
# and 4), webhooks and submit latency (goals 2 and 3), then the S3 endpoint.
BENCHES = ["joblist_bench", "dashboard_bench", "webhooks_bench", "firststep_bench", "s3_bench"]
QUICK_ARGS = {"s3_bench": ["--size-mib", "32", "--big-mib", "0", "--repeat", "1"]}  # others take --quick


def discover() -> list[str]:
    present = {p.stem for p in HERE.glob("*_bench.py")}
    return [b for b in BENCHES if b in present] + sorted(present - set(BENCHES))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1:]
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    markdown_to = None
    if "--markdown" in args:
        i = args.index("--markdown")
        if i + 1 >= len(args):
            print("--markdown needs a file name", file=sys.stderr)
            return 2
        markdown_to = Path(args[i + 1])
        del args[i:i + 2]
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
        print(report.summary(report.ROWS))
        if markdown_to is not None:
            markdown_to.write_text(report.markdown(report.ROWS) + "\n")
            print(f"table written to {markdown_to}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
