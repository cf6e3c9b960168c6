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


def test_interleaved_takes_turns_and_batches_fast_calls(monkeypatch):
    """Who goes first swaps every round; a pair whose peer is fast is timed in batches, the
    same size for both sides; results are per call."""
    clock = [0.0]
    monkeypatch.setattr(report.time, "perf_counter", lambda: clock[0])
    calls = []

    def timed(name, ms):
        def fn():
            calls.append(name)
            clock[0] += ms / 1000
        return fn

    pairs = {"fast": (timed("ours", 0.02), timed("peer", 0.01)), "slow": (timed("o2", 3.0), timed("p2", 2.0))}
    out = report.interleaved(pairs, rounds=2, per_round=2, sample_ms=1.0)
    assert out["fast"][0] == pytest.approx([0.02] * 4) and out["fast"][1] == pytest.approx([0.01] * 4)
    assert out["slow"][0] == pytest.approx([3.0] * 4) and out["slow"][1] == pytest.approx([2.0] * 4)
    timed_calls = calls[6:]  # after the batch sizing (three calls of each peer)
    assert calls[:6] == ["peer"] * 3 + ["p2"] * 3
    batch = 100  # 1 ms / 0.01 ms
    first = timed_calls[:2 * batch * 2]
    assert first[:2 * batch] == ["ours"] * 2 * batch and first[2 * batch:] == ["peer"] * 2 * batch
    slow_round1 = timed_calls[4 * batch:4 * batch + 4]
    assert slow_round1 == ["o2", "o2", "p2", "p2"]  # batch 1 when the peer takes over 1 ms
    second = timed_calls[4 * batch + 4:]
    assert second[:2 * batch] == ["peer"] * 2 * batch  # round 2: the peer goes first
    assert second[-4:] == ["p2", "p2", "o2", "o2"]


def test_small_figures_keep_three_digits():
    assert report.num(0.0128) == "0.0128" and report.num(0.00811) == "0.00811"
    assert report.num(1.234) == "1.23" and report.num(0) == "0.00" and report.num(2622.731) == "2622.73"
