"""``python -m bench`` works (correctness only: the smallest sizes, no timing is asserted)."""
from __future__ import annotations

import pytest

from bench import __main__ as bench_main
from bench import dataset, report


@pytest.fixture
def rows(monkeypatch, tmp_path):
    monkeypatch.setattr(dataset, "CACHE", tmp_path / "cache")
    fresh: list[report.Row] = []
    monkeypatch.setattr(report, "ROWS", fresh)
    return fresh


@pytest.mark.slow
def test_joblist_quick_prints_the_table(rows, tmp_path, capsys):
    md = tmp_path / "table.md"
    rc = bench_main.main(["--quick", "--markdown", str(md), "joblist", "--", "--jobs", "3000", "--log-lines", "2000",
                          "--rounds", "1", "--per-round", "1", "--no-postgres"])
    out = capsys.readouterr().out
    assert rc == 0
    figures = {r.what for r in rows}
    assert {"default page", "status=queued (2 %)", "deep page by cursor (90 % down)",
            "log ?offset= near the end (poll)"} <= figures
    assert all(r.ours > 0 and r.peer > 0 and r.met is not None for r in rows)
    header = out.split("\n== joblist_bench: ok", 1)[1]
    assert "figure" in header and "ratio" in header and "met?" in header and "goals met" in header
    assert md.read_text().startswith("| bench | figure | ours | peer |")
    assert md.read_text().count("\n") == len(rows) + 2


@pytest.mark.slow
def test_dashboard_quick_runs(rows, capsys):
    rc = bench_main.main(["dashboard", "--", "--phase-seconds", "0.5", "--phases", "2"])
    assert rc == 0, capsys.readouterr()
    figures = {r.what for r in rows}
    assert {"job page: refresh p95", "job list: refresh p95", "server CPU per refresh (all kinds)",
            "server CPU per panel poll, If-None-Match, job unchanged"} <= figures
    assert "304" in capsys.readouterr().out  # unchanged jobs were answered Not Modified


def test_unknown_bench_is_refused(capsys):
    assert bench_main.main(["nosuch"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_benches_are_listed_in_order():
    found = bench_main.discover()
    assert found[:2] == ["joblist_bench", "dashboard_bench"] and "webhooks_bench" in found
