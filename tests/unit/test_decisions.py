"""The HA decisions, in milliseconds: every branch gives its action and its sentence."""

from __future__ import annotations

import pytest

from sqlrepl.core.decisions import (
    ALIVE,
    EXPIRED,
    HELD,
    LOST,
    NONE,
    UNREACHABLE,
    Action,
    Do,
    FollowerView,
    LeaderView,
    decide_follower,
    decide_leader,
    further_ahead,
    needs_peers,
)
from sqlrepl.core.positions import Position

ME, OTHER = "http://me:1", "http://other:2"
MAY_HAVE_EXPIRED = "stepped down: the leader lease may have expired"
TAKE = "no lease and no other holder: taking the leader key"


@pytest.mark.parametrize(
    ("lease", "renewal", "gate_open", "holder", "expected"),
    [
        (EXPIRED, None, True, None, (Do.STEP_DOWN, MAY_HAVE_EXPIRED)),
        (EXPIRED, UNREACHABLE, True, None,
         (Do.STEP_DOWN, "stepped down: etcd unreachable, the lease may have expired")),
        (HELD, LOST, True, None, (Do.STEP_DOWN, "stepped down: lease lost")),
        (HELD, UNREACHABLE, True, None, (Do.NOTHING, "etcd unreachable; the lease still holds")),
        (HELD, ALIVE, False, None, (Do.OPEN_GATE, "leading epoch 7 with the lease: gate opened")),
        (HELD, ALIVE, True, None, (Do.NOTHING, "leading epoch 7 with the lease")),
        (NONE, None, False, OTHER, (Do.FOLLOW, f"following {OTHER}, which holds the lease")),
        (NONE, None, False, ME, (Do.ACQUIRE, TAKE)),
        (NONE, None, False, None, (Do.ACQUIRE, TAKE)),
    ],
)  # fmt: skip
def test_leader_decisions(
    lease: str, renewal: str | None, gate_open: bool, holder: str | None, expected: tuple
) -> None:
    """A leader's view gives one action and the sentence the log records."""
    action = decide_leader(LeaderView(ME, 7, gate_open, lease, renewal, holder))
    assert (action.do, action.sentence) == expected
    if action.do is Do.FOLLOW:
        assert action.target == OTHER


def follower_view(**changes: object) -> FollowerView:
    view = {
        "url": ME,
        "following": OTHER,
        "holder": None,
        "handing_over": False,
        "eligible": True,
        "why_not": None,
        "position": Position(3, 40),
        "better_peer": None,
    }
    return FollowerView(**{**view, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"holder": {"url": ME, "epoch": 4}},
         Action(Do.NOTHING, "etcd names this node the leader: waiting for its promotion")),
        ({"holder": {"url": "http://third:3", "epoch": 4}},
         Action(Do.REPOINT, "following http://third:3 (epoch 4)", "http://third:3")),
        ({"holder": {"url": OTHER, "epoch": 3}}, Action(Do.NOTHING, f"following {OTHER}")),
        ({"handing_over": True}, Action(Do.NOTHING, "handing over")),
        ({"eligible": False, "why_not": "not a candidate (started with --no-candidate)"},
         Action(Do.NOTHING, "no leader, and this node may not run: not a candidate "
                "(started with --no-candidate)")),
        ({"better_peer": "http://third:3"},
         Action(Do.NOTHING, "no leader; yielding to http://third:3, which is further ahead")),
        ({}, Action(Do.ACQUIRE, "no leader: racing for the leader key at 3/40")),
    ],
)  # fmt: skip
def test_follower_decisions(changes: dict, expected: Action) -> None:
    """A follower's view gives one action and the sentence the log records."""
    assert decide_follower(follower_view(**changes)) == expected


def test_peers_are_asked_only_when_an_election_is_possible() -> None:
    """Peers' positions are fetched only with no leader and an eligible, idle candidate."""
    assert needs_peers(follower_view())
    assert not needs_peers(follower_view(holder={"url": OTHER}))
    assert not needs_peers(follower_view(eligible=False))
    assert not needs_peers(follower_view(handing_over=True))
    assert not needs_peers(follower_view(position=None))


def test_further_ahead_orders_by_epoch_seq_then_node() -> None:
    """Epoch first, then seq; a tie goes to the smaller node id; ineligible peers never win."""
    mine = Position(3, 40)
    assert further_ahead({"eligible": True, "epoch": 4, "seq": 1, "node": "z"}, mine, "m")
    assert further_ahead({"eligible": True, "epoch": 3, "seq": 41, "node": "z"}, mine, "m")
    assert further_ahead({"eligible": True, "epoch": 3, "seq": 40, "node": "a"}, mine, "m")
    assert not further_ahead({"eligible": True, "epoch": 3, "seq": 40, "node": "z"}, mine, "m")
    assert not further_ahead({"eligible": True, "epoch": 3, "seq": 39, "node": "a"}, mine, "m")
    assert not further_ahead({"eligible": False, "epoch": 9, "seq": 99, "node": "a"}, mine, "m")
    assert not further_ahead({"eligible": True, "epoch": None, "seq": None}, mine, "m")


def test_a_handover_under_way_keeps_the_gate_closed() -> None:
    """While a switchover or a stop hands over, the HA loop neither reopens the gate (apps
    would write what the target never gets) nor takes the released key back."""
    for lease, renewal, holder in ((HELD, ALIVE, None), (NONE, None, None), (NONE, None, OTHER)):
        view = LeaderView(ME, 7, False, lease, renewal, holder, handing_over=True)
        assert decide_leader(view) == Action(
            Do.NOTHING, "handing over: the gate stays closed until it is done"
        )


def test_the_sync_rule_waits_for_members_that_may_hold_acknowledged_commits() -> None:
    """k=1 of {a, b}: any acknowledged commit is on a or b, so a candidate must hear both
    (n - k + 1 = 2) and be at least as far as each; k=2 of {a, b, c}: two suffice."""
    from sqlrepl.core.quorum import SyncSet, may_drop, verdict

    one = SyncSet(7, "L", 1, {"a": "http://a", "b": "http://b"})
    at = Position(7, 100)
    assert one.quorum == 2
    assert verdict(one, "a", at, {"b": Position(7, 90)}, "7:120") is None
    said = verdict(one, "a", at, {"b": None}, "7:120")
    assert said is not None and said.startswith("waiting for b, which may hold acknowledged")
    assert "up to 7:120" in said
    ahead = verdict(one, "a", at, {"b": Position(7, 101)}, "7:120")
    assert ahead is not None and "b of the sync set holds more" in ahead
    # Not a member: it must hear both members and be as far as each.
    assert verdict(one, "s", at, {"a": Position(7, 100), "b": None}, "7:120") is not None
    assert verdict(one, "s", at, {"a": at, "b": at}, "7:120") is None
    assert verdict(one, "s", Position(7, 5), {"a": at, "b": at}, "7:120") is not None
    two = SyncSet(7, "L", 2, {"a": "", "b": "", "c": ""})
    assert two.quorum == 2
    assert verdict(two, "a", at, {"b": None, "c": Position(7, 3)}, "7:120") is None
    assert verdict(two, "s", at, {"b": None, "c": Position(7, 3)}, "7:120") is not None
    # A member leaves only while k others hold everything acknowledged.
    assert may_drop("b", {"a": 100, "b": 50}, 1, 100)
    assert not may_drop("a", {"a": 100, "b": 50}, 1, 100)
    assert not may_drop("c", {"a": 100, "b": 50, "c": 100}, 2, 100)
    assert SyncSet.load(two.dump()) == two


def test_a_candidate_waits_while_the_sync_rule_is_not_met() -> None:
    view = FollowerView(
        url="http://me:1",
        following="http://old:1",
        holder=None,
        handing_over=False,
        eligible=True,
        why_not=None,
        position=Position(3, 10),
        waiting="waiting for n3, which may hold acknowledged commits up to 3:12",
    )
    action = decide_follower(view)
    assert action.do is Do.NOTHING
    assert (
        action.sentence
        == "no leader; waiting for n3, which may hold acknowledged commits up to 3:12"
    )


def test_the_sync_rule_counts_an_answer_for_the_member_it_names() -> None:
    """Status answers are matched to members by the node they name, and the waiting
    sentence names the head a leader published."""
    from sqlrepl.core.quorum import SyncSet, judge

    sync = SyncSet(7, "L", 1, {"a": "http://a", "b": "http://b"})
    at = Position(7, 100)
    other = {"node": "x", "epoch": 7, "seq": 100}  # another node at b's URL
    said = judge(sync, "a", at, [other], {"epoch": 7, "seq": 120})
    assert said is not None and said.startswith("waiting for b") and "up to 7:120" in said
    assert judge(sync, "a", at, [{"node": "b", "epoch": 7, "seq": 99}], None) is None
    unknown = judge(sync, "s", at, [], None)
    assert unknown is not None and "up to the newest head" in unknown
