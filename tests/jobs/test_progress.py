from stcloud.jobs import progress


def test_step_loss_stage_parsed():
    p = progress.parse("stage: training\nstep 120/2000 loss=0.1234 lr=1e-3\n", None)
    assert p["step"] == 120 and p["total_steps"] == 2000
    assert p["loss"] == 0.1234 and p["stage"] == "training"
    assert p["losses"] == [[120, 0.1234]]


def test_tqdm_style_and_loss_colon():
    p = progress.parse("Steps:   6%|▌         | 120/2000 [01:00<10:00, loss: 0.5]\n", None)
    assert (p["step"], p["total_steps"], p["loss"]) == (120, 2000, 0.5)


def test_unrelated_lines_no_change():
    assert progress.parse("hello world\nloading model\n", {"step": 3}) is None


def test_resume_line_recorded():
    p = progress.parse("resumed from checkpoint /x/checkpoint-100 at step 100\n", None)
    assert p["resumes"] == [{"checkpoint": "/x/checkpoint-100", "step": 100}]


def test_loss_history_is_thinned():
    text = "".join(f"step {i}/5000 loss={1/(i+1):.5f}\n" for i in range(1, 2000))
    p = progress.parse(text, None)
    assert len(p["losses"]) <= progress.MAX_LOSS_POINTS + 1
    assert p["losses"][-1][0] == 1999


def test_percent():
    assert progress.percent({"step": 50, "total_steps": 200}) == 25.0
    assert progress.percent({}) is None
