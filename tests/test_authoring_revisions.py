"""Two people editing one draft (CONTRACT.md, "Drafts"; docs/dashboard.md, "Two people,
one draft"): each save is the draft's next revision with a new ETag, and a save or publish
naming a revision someone else has saved past is a 409 that names the current one; nothing
is overwritten. Through the REST API on the run's database."""

import pytest

from stepstream.testing.flows import LINEAR_FLOW
from tests.test_authoring import errors, ok, url

DRAFT = url("flows", "onboarding", "draft")


def put(api, body, **headers):
    return api.put(DRAFT, body, format="json", headers=headers)


def named(name: str) -> dict:
    return {**LINEAR_FLOW, "name": name}


def test_each_save_is_a_revision_with_its_etag(api):
    first = put(api, named("One"))
    assert ok(first)["revision"] == 1 and first["ETag"]
    second = put(api, named("Two"), if_match=first["ETag"])
    assert ok(second)["revision"] == 2 and second["ETag"] != first["ETag"]
    read = api.get(DRAFT)
    assert ok(read)["revision"] == 2 and read["ETag"] == second["ETag"]
    assert ok(read)["draft"]["name"] == "Two"


def test_the_later_of_two_saves_from_one_read_is_refused_and_names_the_revision(api, keys):
    tag = put(api, named("Start"))["ETag"]
    ok(put(api, named("Ada's"), if_match=tag))  # the first to save wins
    refused = errors(put(api, named("Bob's"), if_match=tag), 409)[0]
    assert "revision 2" in refused and "read it again" in refused
    assert keys["secret_key"][:8] in refused and keys["secret_key"] not in refused
    assert ok(api.get(DRAFT))["draft"]["name"] == "Ada's"  # not overwritten
    # read again, change, save: accepted
    fresh = api.get(DRAFT)["ETag"]
    assert ok(put(api, named("Bob's"), if_match=fresh))["revision"] == 3
    # a client that sends no ETag overwrites, as the contract's PUT always did
    assert ok(put(api, named("Anyone's")))["revision"] == 4


def test_a_publish_names_the_revision_it_read(api):
    tag = put(api, named("Checked"))["ETag"]
    ok(put(api, named("Changed meanwhile"), if_match=tag))
    publish = url("flows", "onboarding", "draft", "publish")
    assert "revision 2" in errors(api.post(publish, headers={"if_match": tag}), 409)[0]
    errors(api.get(url("flows", "onboarding")), 404)  # nothing published
    flow = ok(api.post(publish, headers={"if_match": api.get(DRAFT)["ETag"]}), 201)
    assert flow["name"] == "Changed meanwhile"


def test_a_draft_published_meanwhile_or_started_again_is_not_the_one_read(api):
    tag = put(api, named("Old"))["ETag"]
    ok(api.post(url("flows", "onboarding", "draft", "publish")), 201)
    assert "no draft any more" in errors(put(api, named("Late"), if_match=tag), 409)[0]
    # someone starts a new draft: its revision is 1 again, yet the old ETag is not its own
    ok(put(api, named("New")))
    assert "revision 1" in errors(put(api, named("Late"), if_match=tag), 409)[0]
    assert ok(api.get(DRAFT))["draft"]["name"] == "New"


def test_star_conditions(api):
    assert "no draft" in errors(put(api, LINEAR_FLOW, if_match="*"), 409)[0]
    assert ok(put(api, LINEAR_FLOW, if_none_match="*"))["revision"] == 1
    assert "revision 1" in errors(put(api, LINEAR_FLOW, if_none_match="*"), 409)[0]
    assert ok(put(api, LINEAR_FLOW, if_match="*"))["revision"] == 2
    # a list of ETags: any of them
    tag = api.get(DRAFT)["ETag"]
    assert ok(put(api, LINEAR_FLOW, if_match=f'"0.1", {tag}'))["revision"] == 3


@pytest.mark.parametrize(
    "headers, word",
    [
        ({"if_match": "3"}, "double quotes"),
        ({"if_match": '"1.1'}, "double quotes"),
        ({"if_none_match": '"1.1"'}, "only"),
        ({"if_match": '"1.1"', "if_none_match": "*"}, "not both"),
    ],
)
def test_malformed_conditions_are_400_saying_how(api, headers, word):
    assert word in errors(put(api, LINEAR_FLOW, **headers), 400)[0]
    errors(api.get(DRAFT), 404)  # nothing saved
