from stcloud.jobs import loss_points, progress


def test_step_loss_stage_parsed():
    p, points = progress.parse("stage: training\nstep 120/2000 loss=0.1234 lr=1e-3\n", None)
    assert p["step"] == 120 and p["total_steps"] == 2000
    assert p["loss"] == 0.1234 and p["best_loss"] == 0.1234 and p["stage"] == "training"
    assert points == [(120, 0.1234)] and "losses" not in p


def test_tqdm_style_and_loss_colon():
    p = progress.parse("Steps:   6%|▌         | 120/2000 [01:00<10:00, loss: 0.5]\n", None).progress
    assert (p["step"], p["total_steps"], p["loss"]) == (120, 2000, 0.5)


def test_unrelated_lines_no_change():
    assert progress.parse("hello world\nloading model\n", {"step": 3}) is None


def test_resume_line_recorded():
    p = progress.parse("resumed from checkpoint /x/checkpoint-100 at step 100\n", None).progress
    assert p["resumes"] == [{"checkpoint": "/x/checkpoint-100", "step": 100}]


def test_best_loss_is_the_lowest_seen_and_every_point_is_returned():
    text = "".join(f"step {i}/5000 loss={abs(i - 700) / 1000 + 0.1:.4f}\n" for i in range(1, 2000))
    p, points = progress.parse(text, {"best_loss": 0.5, "loss": 0.6})
    assert len(points) == 1999 and points[0] == (1, 0.799) and points[-1][0] == 1999
    assert p["best_loss"] == 0.1 and p["loss"] == points[-1][1] and p["step"] == 1999
    p, _ = progress.parse("step 2000/5000 loss=0.05\n", p)
    assert p["best_loss"] == 0.05


def test_history_thinning_keeps_the_newest_points_and_the_shape():
    ids = list(range(1, 1000))
    kept = loss_points.thinned(ids)
    assert len(kept) <= loss_points.MAX_POINTS and kept[-200:] == ids[-200:] and kept[0] == 1
    assert kept == sorted(kept)
    assert loss_points.thinned(ids[:400]) == ids[:400]


def test_percent():
    assert progress.percent({"step": 50, "total_steps": 200}) == 25.0
    assert progress.percent({}) is None
