"""Every allowed and every forbidden move of SPEC §2."""
import itertools

import pytest

from stcloud.jobs import states

ALLOWED = {
    ("pending", "uploading"), ("pending", "queued"), ("pending", "running"), ("pending", "cancelled"),
    ("pending", "failed"),
    ("uploading", "queued"), ("uploading", "running"), ("uploading", "cancelled"), ("uploading", "failed"),
    ("queued", "running"), ("queued", "cancelled"), ("queued", "failed"),
    ("running", "completed"), ("running", "failed"), ("running", "cancelled"), ("running", "queued"),
}
ALL_PAIRS = [(a, b) for a, b in itertools.product(states.STATUSES, repeat=2) if a != b]


@pytest.mark.parametrize("frm,to", sorted(ALLOWED))
def test_allowed(frm, to):
    assert states.can_move(frm, to)


@pytest.mark.parametrize("frm,to", sorted(set(ALL_PAIRS) - ALLOWED))
def test_forbidden(frm, to):
    assert not states.can_move(frm, to)


def test_terminal_states_have_no_moves():
    for t in states.TERMINAL:
        assert states.ALLOWED[t] == frozenset()
        assert states.is_terminal(t)


def test_replicate_map_and_unknown():
    assert states.REPLICATE_STATUS["starting"] == "queued"
    assert states.REPLICATE_STATUS["processing"] == "running"
    assert states.REPLICATE_STATUS["succeeded"] == "completed"
    assert states.REPLICATE_STATUS["canceled"] == "cancelled"
    assert states.REPLICATE_STATUS["aborted"] == "failed"
    assert "exploding" not in states.REPLICATE_STATUS


def test_validate_status():
    with pytest.raises(ValueError):
        states.validate_status("done")
