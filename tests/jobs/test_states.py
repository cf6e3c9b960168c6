"""Every allowed and every forbidden move of SPEC §2."""
import itertools

import pytest

from stcloud import states

ALLOWED = {
    ("pending", "uploading"), ("pending", "queued"), ("pending", "running"), ("pending", "cancelled"),
    ("pending", "failed"),
    ("uploading", "queued"), ("uploading", "running"), ("uploading", "cancelled"), ("uploading", "failed"),
    ("queued", "running"), ("queued", "cancelled"), ("queued", "failed"),
    ("running", "completed"), ("running", "failed"), ("running", "cancelled"), ("running", "queued"),
    ("pending", "pending_approval"),
    ("pending_approval", "uploading"), ("pending_approval", "cancelled"), ("pending_approval", "failed"),
    ("waiting", "pending"), ("waiting", "cancelled"), ("waiting", "failed"),
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
    from stcloud.providers.replicate_map import map_status

    assert map_status("starting").value == "queued"
    assert map_status("processing").value == "running"
    assert map_status("succeeded").value == "completed"
    assert map_status("canceled").value == "cancelled"
    assert map_status("aborted").value == "failed"
    assert map_status("exploding") is None


def test_validate_status():
    with pytest.raises(ValueError):
        states.validate_status("done")


def test_waiting_holds_no_reservation():
    assert "waiting" in states.STATUSES and "waiting" not in states.ACTIVE
    assert not states.is_terminal("waiting")
