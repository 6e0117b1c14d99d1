"""Subscriptions: idempotent, removable, per connection, never crossing people or tenants."""


def test_subscribing_five_times_gives_one_event_per_change(ws, rest, person_key):
    for request_id in (7, 7, "again", 9, 10):
        assert (
            ws.request(
                "subscribe_state_change",
                {"person_key": person_key, "entity": "flow"},
                request_id=request_id,
            )["status"]
            == 200
        )
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    rest.post(f"/people/{person_key}/flows/onboarding/pause")
    ws.wait_events(2)
    ws.quiet(0.5)
    assert [e["data"]["state"] for e in ws.events] == ["active", "inactive"]
    assert {e["request_id"] for e in ws.events} == {7}


def test_unsubscribe_stops_events_and_is_200_when_not_subscribed(ws, rest, person_key):
    assert (
        ws.request("unsubscribe_state_change", {"person_key": person_key, "entity": "step"})[
            "status"
        ]
        == 200
    )
    ws.subscribe(person_key, "step")
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    ws.wait_events(1)
    assert (
        ws.request("unsubscribe_state_change", {"person_key": person_key, "entity": "step"})[
            "status"
        ]
        == 200
    )
    ws.quiet(0.2)
    count = len(ws.events)
    rest.post(f"/people/{person_key}/flows/onboarding/transitions", json={"transition": "next"})
    assert ws.quiet(0.5) == []
    assert len(ws.events) == count


def test_two_connections_for_one_person_both_receive(connect, rest, person_key):
    first, second = connect(), connect()
    first.subscribe(person_key, "step")
    second.subscribe(person_key, "step")
    rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
    assert first.wait_events(1)[0]["data"] == second.wait_events(1)[0]["data"]


def test_events_never_reach_another_person_or_environment(
    connect, server, tenant, rest, person_key
):
    mine, other_person, other_env = connect(), connect(), connect(tenant["prod"]["publishable_key"])
    rest.put(f"/people/{person_key}-other", json={"data": {}})
    mine.subscribe(person_key, "step")
    other_person.subscribe(f"{person_key}-other", "step")
    with server.rest(tenant["prod"]["secret_key"]) as prod:
        prod.put(f"/people/{person_key}", json={"data": {}})
        prod.post("/flows", json={"identifier": "onboarding", "steps": [{"identifier": "x"}]})
        other_env.subscribe(person_key, "step")
        rest.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
        mine.wait_events(1)
        assert other_person.quiet(0.5) == []
        assert other_env.quiet(0.1) == []
        # and the production person's own change reaches only the production subscriber
        prod.post(f"/people/{person_key}/flows", json={"flow": "onboarding"})
        assert [e["data"]["identifier"] for e in other_env.wait_events(2)] == ["x", "x"]
    assert all(e["data"]["identifier"] != "x" for e in mine.quiet(0.3) + mine.events)


def test_a_person_of_another_environment_is_404_like_an_unknown_one(connect, tenant, server):
    with server.rest(tenant["prod"]["secret_key"]) as prod:
        prod.put("/people/only-in-production", json={"data": {}})
    client = connect()
    found_elsewhere = client.subscribe("only-in-production", "flow")
    unknown = client.subscribe("no-such-person-anywhere", "flow")
    assert found_elsewhere["status"] == unknown["status"] == 404
    assert client.request("get_state", {"person_key": "only-in-production"})["status"] == 404


def test_many_subscribes_at_once_each_get_their_own_answer_and_backlog(
    connect, server, tenant, rest, person_key
):
    """Subscribes arriving together (as after a server restart) are read from the database
    together: each still gets its own person's answer, 404 for an unknown person or one of
    another environment with the same key, and exactly its own backlog with since_seq."""
    import orjson

    people = [f"{person_key}-{i}" for i in range(12)]
    for p in people:
        assert rest.put(f"/people/{p}", json={"data": {}}).status_code == 201
        assert rest.post(f"/people/{p}/flows", json={"flow": "loop"}).status_code == 201
    last = rest.get(f"/people/{people[0]}/flows").json()[0]["seq"]
    with server.rest(tenant["prod"]["secret_key"]) as prod:  # the same key, elsewhere
        assert prod.put(f"/people/{person_key}-prod", json={"data": {}}).status_code == 201
    dev, prod = connect(), connect(tenant["prod"]["publishable_key"])
    asked = {}
    for i, p in enumerate([*people, f"{person_key}-nobody", f"{person_key}-prod"]):
        for entity in ("flow", "step"):
            rid = f"{i}-{entity}"
            asked[rid] = p
            data = {"person_key": p, "entity": entity, "since_seq": 0}
            dev.ws.send(
                orjson.dumps({"action": "subscribe_state_change", "request_id": rid, "data": data})
            )
    prod.ws.send(
        orjson.dumps(
            {
                "action": "subscribe_state_change",
                "request_id": "p",
                "data": {"person_key": f"{person_key}-prod", "entity": "flow"},
            }
        )
    )
    answers = {}
    while len(answers) < len(asked):
        response = dev.next_response()
        answers[response["request_id"]] = response["status"]
    assert prod.next_response()["status"] == 200
    for rid, p in asked.items():
        assert answers[rid] == (200 if p in people else 404), (rid, p)
    events = dev.wait_events(len(people) * last)
    dev.quiet(0.3)
    assert len(dev.events) == len(people) * last  # each person's whole log, once
    for p in people:
        mine = [e["data"]["seq"] for e in events if e["data"]["person_key"] == p]
        assert sorted(mine) == list(range(1, last + 1)), (p, mine)


def test_connects_arriving_together_each_get_their_own_keys_answer(
    connect, server, tenant, person_key
):
    """Connects at the same moment (a reconnect storm) share their key reads: each socket
    still lands in its own key's environment, and a wrong key among them is refused."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.wsclient import refused

    keys = [tenant["dev"]["publishable_key"], tenant["prod"]["publishable_key"], "pk_wrong"]

    def open_one(i: int):
        key = keys[i % 3]
        if key == "pk_wrong":
            return key, refused(f"{server.ws_url}/ws?key={key}")[0]
        client = connect(key)
        return key, client.request(
            "subscribe_state_change", {"person_key": person_key, "entity": "flow"}
        )["status"]

    with ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(open_one, range(60)))
    # the person exists in dev only; a wrong key is closed with 4401
    expected = {keys[0]: 200, keys[1]: 404, "pk_wrong": 4401}
    assert all(status == expected[key] for key, status in outcomes), outcomes
