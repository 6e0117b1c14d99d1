"""The Python client's merging of snapshots and events (stepstream_client.PersonState), alone.

No server: the situations a live connection makes rarely and by chance (a
late event, a repeated one, an instance started or replaced behind the
snapshot) are built here on purpose. tests/test_ws_events_agree.py feeds the
same class a real server's events.
"""

from stepstream_client import PersonState


def instance(iid: str, state: str, steps: dict[str, str], flow: str = "onboarding") -> dict:
    return {
        "id": iid,
        "flow": flow,
        "version": 1,
        "state": state,
        "steps": [{"id": f"{iid}-{s}", "identifier": s, "state": v} for s, v in steps.items()],
    }


def event(seq: int, iid: str, entity: str, item: str, state: str, previous: str, **kw) -> dict:
    return {
        "entity": entity,
        "id": iid if entity == "flow" else f"{iid}-{item}",
        "identifier": item,
        "state": state,
        "previous_state": previous,
        "seq": seq,
        "flow": kw.get("flow", "onboarding"),
        "flow_id": iid,
    }


def held(state: PersonState) -> dict:
    return {
        name: (f.id, f.state, {s.identifier: s.state for s in f.steps})
        for name, f in state.flows.items()
    }


def snapshot_at(seq: int, *instances: dict) -> dict:
    return {"seq": seq, "flows": list(instances)}


def started(seq: int = 3) -> PersonState:
    state = PersonState()
    state.apply_snapshot(
        snapshot_at(seq, instance("a", "active", {"welcome": "active", "done": "inactive"})),
        replace=True,
    )
    state.resume_from(seq)
    return state


def test_events_move_states_once_and_never_backwards():
    state = started()
    applied = state.apply_event(event(4, "a", "step", "welcome", "completed", "active"))
    assert applied.new and applied.changed == ("onboarding",) and not applied.needs_snapshot
    assert state.seq == {"flow": 3, "step": 4}
    # the same event again (a resubscription's overlap): dropped as seen
    assert not state.apply_event(event(4, "a", "step", "welcome", "completed", "active")).new
    # a snapshot older than that change does not bring the step back
    applied = state.apply_snapshot(
        snapshot_at(3, instance("a", "active", {"welcome": "active", "done": "inactive"})),
        replace=False,
    )
    assert applied.changed == ()
    assert held(state)["onboarding"][2] == {"welcome": "completed", "done": "inactive"}
    # a replayed change older than what the snapshot showed is reported, but changes nothing
    replaying = started(seq=10)
    replaying.resume_from(2)
    applied = replaying.apply_event(event(3, "a", "step", "welcome", "inactive", "active"))
    assert applied.new and applied.changed == ()
    assert held(replaying)["onboarding"][2]["welcome"] == "active"


def test_events_of_an_instance_not_held_wait_for_the_snapshot_that_replaces_it():
    state = started()
    # restart: the held instance exits, then a new one (new flow_id) starts
    assert state.apply_event(event(4, "a", "flow", "onboarding", "exited", "active")).changed
    waiting = state.apply_event(event(5, "b", "flow", "onboarding", "active", "inactive"))
    assert waiting.new and waiting.changed == () and waiting.needs_snapshot
    state.apply_event(event(6, "b", "step", "welcome", "active", "inactive"))
    late = event(7, "b", "step", "welcome", "completed", "active")
    state.apply_event(late)
    assert [c["seq"] for c in state.unplaced] == [5, 6, 7]
    assert held(state)["onboarding"][:2] == ("a", "exited")
    # a snapshot read between seq 6 and 7: the new instance replaces the old one,
    # and the change after the snapshot is applied on top of it
    applied = state.apply_snapshot(
        snapshot_at(6, instance("b", "active", {"welcome": "active", "done": "inactive"})),
        replace=False,
    )
    assert not applied.needs_snapshot and state.unplaced == ()
    assert applied.changed == ("onboarding", "onboarding")
    assert held(state) == {
        "onboarding": ("b", "active", {"welcome": "completed", "done": "inactive"})
    }


def test_waiting_events_older_than_a_snapshot_without_their_instance_are_dropped():
    state = started()
    state.apply_event(event(4, "t", "flow", "tour", "active", "inactive", flow="tour"))
    state.apply_event(event(9, "u", "flow", "tour", "active", "inactive", flow="tour"))
    assert state.needs_snapshot
    # read at seq 5: instance "t" is gone (already replaced); "u" is still to come
    applied = state.apply_snapshot(
        snapshot_at(5, instance("a", "active", {"welcome": "active", "done": "inactive"})),
        replace=False,
    )
    assert applied.needs_snapshot and [c["seq"] for c in state.unplaced] == [9]


def test_a_snapshot_removes_flows_it_lacks_unless_changed_after_it():
    state = started()
    onboarding = instance("a", "active", {"welcome": "active", "done": "inactive"})
    tour = instance("t", "active", {"look": "active"}, flow="tour")
    assert state.apply_snapshot(snapshot_at(3, onboarding, tour), replace=False).changed == (
        "tour",
    )
    assert set(state.flows) == {"onboarding", "tour"}
    state.apply_event(event(8, "t", "step", "look", "completed", "active", flow="tour"))
    applied = state.apply_snapshot(snapshot_at(5), replace=False)
    # onboarding was not changed after seq 5 (the person lost it); tour was
    assert applied.changed == ("onboarding",) and set(state.flows) == {"tour"}
    # a first snapshot with replace forgets everything held
    state.apply_snapshot(snapshot_at(1), replace=True)
    assert state.flows == {} and not state.needs_snapshot
