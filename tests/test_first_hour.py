"""A newcomer's first hour (issue 28): mistakes answered with a sentence that says what to do."""

import pytest

BASE = "/api/v1"


def errors_of(response, status: int) -> list[str]:
    assert response.status_code == status, (response.status_code, response.content)
    return response.json()["errors"]


# -- PUT /people/{key} without a `data` object -----------------------------------------------


@pytest.mark.parametrize("body", [{"plan": "pro"}, {}, {"plan": "pro", "seats": 3}])
def test_a_person_body_of_bare_fields_is_refused_and_nobody_is_made(api, body):
    errors = errors_of(api.put(f"{BASE}/people/u", body, format="json"), 400)
    assert len(errors) == 1
    assert '"data" object' in errors[0] and '{"data": {' in errors[0], errors
    for name in body:
        assert name in errors[0], errors
    assert api.get(f"{BASE}/people/u").status_code == 404


def test_a_person_put_with_no_body_is_refused(api):
    errors = errors_of(api.put(f"{BASE}/people/u"), 400)
    assert '"data" object' in errors[0], errors
    assert api.get(f"{BASE}/people/u").status_code == 404


@pytest.mark.parametrize("data", [None, [], "pro", 3])
def test_a_data_that_is_not_an_object_is_refused(api, data):
    errors = errors_of(api.put(f"{BASE}/people/u", {"data": data}, format="json"), 400)
    assert errors == ["data must be a JSON object."]


def test_a_data_object_still_makes_the_person(api):
    assert api.put(f"{BASE}/people/u", {"data": {}}, format="json").status_code == 201
    answer = api.put(f"{BASE}/people/u", {"data": {"plan": "pro"}, "extra": 1}, format="json")
    assert answer.status_code == 200
    assert answer.json() == {"person_key": "u", "data": {"plan": "pro"}}
