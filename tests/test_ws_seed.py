"""The seed request's acceptance criteria, literally, through a real server and socket."""

SEED_RESPONSE_KEYS = {"request_id", "errors", "status"}
SEED_EVENT_DATA_KEYS = {"entity", "id", "identifier", "state", "previous_state"}


def test_valid_person_and_entity_get_status_200(ws, person_key):
    for entity in ("flow", "step"):
        response = ws.subscribe(person_key, entity)
        assert response["status"] == 200


def test_response_has_the_seed_structure(ws, person_key):
    response = ws.request(
        "subscribe_state_change",
        {"person_key": person_key, "entity": "flow"},
        request_id=1519211809934,
    )
    assert response.keys() >= SEED_RESPONSE_KEYS
    assert response["request_id"] == 1519211809934
    assert response["errors"] == []
    assert response["status"] == 200


def test_flow_and_step_changes_produce_seed_events(ws, rest, person_key):
    ws.request(
        "subscribe_state_change", {"person_key": person_key, "entity": "flow"}, request_id=11
    )
    ws.request(
        "subscribe_state_change", {"person_key": person_key, "entity": "step"}, request_id=22
    )
    started = rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"}).json()

    flow_event, step_event = ws.wait_events(2)
    assert flow_event == {
        "event": "state_change",
        "request_id": 11,
        "data": flow_event["data"],
    }
    assert flow_event["data"].keys() >= SEED_EVENT_DATA_KEYS
    assert flow_event["data"]["entity"] == "flow"
    assert flow_event["data"]["id"] == started["id"]
    assert flow_event["data"]["identifier"] == "onboarding"
    assert flow_event["data"]["state"] == "active"
    assert flow_event["data"]["previous_state"] == "inactive"

    assert step_event["event"] == "state_change"
    assert step_event["request_id"] == 22
    welcome = next(s for s in started["steps"] if s["identifier"] == "welcome")
    assert step_event["data"]["entity"] == "step"
    assert step_event["data"]["id"] == welcome["id"]
    assert step_event["data"]["identifier"] == "welcome"
    assert (step_event["data"]["previous_state"], step_event["data"]["state"]) == (
        "inactive",
        "active",
    )


def test_invalid_person_is_404_and_invalid_entity_is_400(ws, person_key):
    unknown = ws.subscribe("nobody-has-this-key", "flow")
    assert unknown["status"] == 404
    assert "nobody-has-this-key" in unknown["errors"][0]
    bad_entity = ws.subscribe(person_key, "planet")
    assert bad_entity["status"] == 400
    assert "entity" in bad_entity["errors"][0]
