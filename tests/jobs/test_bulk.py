"""Each bulk operation through HTTP, on ids and on a filter, checked on the rows."""

from __future__ import annotations

from fastapi.testclient import TestClient

from audience.db import Database
from tests.conftest import Tenant
from tests.factories import create_user
from tests.jobs.helpers import (
    create_list,
    create_tag,
    custom,
    done,
    existing,
    history,
    job,
    members,
    queued,
    run,
    tagged,
    users,
)

PRO = {"field": "custom_attributes.plan", "op": "eq", "value": "pro"}


def test_bulk_answers_202_with_the_queued_job(api: TestClient, tenant: Tenant) -> None:
    ids = users(api, 2)
    created = queued(
        api, operation="set_attribute", attribute="city", value="Berlin", ids=[*ids, ids[0]]
    )
    assert created["type"] == "job"
    assert created["id"].isdigit()
    assert created["kind"] == "bulk"
    assert created["operation"] == "set_attribute"
    assert created["arguments"] == {"attribute": "city", "value": "Berlin"}
    assert created["selection"] == {"type": "ids", "count": 2}  # repeats count once
    assert created["status"] == "queued"
    assert (created["total"], created["done"], created["failed"]) == (2, 0, 0)
    assert created["errors"] == []
    assert created["created_by"].startswith("api_key:")
    assert created["created_at"] == created["updated_at"] > 0
    assert created["started_at"] is None and created["finished_at"] is None
    assert created["download_url"] is None
    assert job(api, created["id"]) == created


def test_set_custom_attribute_on_ids_goes_through_typing_and_history(
    api: TestClient, database: Database
) -> None:
    a, b, untouched = users(api, 3, custom_attributes={"plan": "free", "seats": 1})
    finished = done(
        api, database, operation="set_attribute", attribute="custom_attributes.seats",
        value="5", ids=[a, b],
    )  # fmt: skip
    assert finished["status"] == "succeeded"
    assert (finished["total"], finished["done"], finished["failed"]) == (2, 2, 0)
    assert finished["started_at"] is not None and finished["finished_at"] is not None
    assert custom(database, a)["seats"] == 5  # "5" coerced to the number type
    assert custom(database, b)["seats"] == 5
    assert custom(database, untouched)["seats"] == 1
    change = history(database, a)[-1]
    assert change == ("custom_attributes.seats", 1, 5, "bulk", f"job:{finished['id']}")
    assert history(database, untouched)[-1][3] == "api"


def test_set_attribute_may_be_an_operation(api: TestClient, database: Database) -> None:
    a, b = users(api, 2, custom_attributes={"logins": 3})
    done(
        api, database, operation="set_attribute", attribute="custom_attributes.logins",
        value={"$add": 2}, ids=[a, b],
    )  # fmt: skip
    assert custom(database, a)["logins"] == custom(database, b)["logins"] == 5


def test_set_standard_attribute_on_a_filter(api: TestClient, database: Database) -> None:
    pro = users(api, 2, custom_attributes={"plan": "pro"})
    free = users(api, 1, custom_attributes={"plan": "free"})
    finished = done(
        api, database, operation="set_attribute", attribute="city", value="Lisbon", filter=PRO
    )
    assert finished["selection"] == {"type": "filter", "filter": PRO}
    assert (finished["total"], finished["done"], finished["failed"]) == (2, 2, 0)
    for id in pro:
        assert api.get(f"/api/v1/users/{id}").json()["city"] == "Lisbon"
        assert history(database, id)[-1] == (
            "city",
            None,
            "Lisbon",
            "bulk",
            f"job:{finished['id']}",
        )
    assert api.get(f"/api/v1/users/{free[0]}").json()["city"] is None


def test_set_timestamp_attribute_takes_unix_seconds(api: TestClient, database: Database) -> None:
    (id,) = users(api, 1)
    done(
        api, database, operation="set_attribute", attribute="signed_up_at", value=1700000000,
        ids=[id],
    )  # fmt: skip
    assert api.get(f"/api/v1/users/{id}").json()["signed_up_at"] == 1700000000


def test_unset_attributes_on_ids_and_on_a_filter(api: TestClient, database: Database) -> None:
    a, b = users(api, 2, city="Paris", custom_attributes={"plan": "pro", "seats": 2})
    done(api, database, operation="unset_attribute", attribute="city", ids=[a])
    assert api.get(f"/api/v1/users/{a}").json()["city"] is None
    assert api.get(f"/api/v1/users/{b}").json()["city"] == "Paris"
    finished = done(
        api, database, operation="unset_attribute", attribute="custom_attributes.seats", filter=PRO
    )
    assert finished["done"] == 2
    assert custom(database, a) == custom(database, b) == {"plan": "pro"}
    assert history(database, b)[-1] == (
        "custom_attributes.seats", 2, None, "bulk", f"job:{finished['id']}",
    )  # fmt: skip


def test_add_and_remove_a_tag_by_id_on_ids(api: TestClient, database: Database) -> None:
    tag = create_tag(api, "VIP")
    a, b, c = users(api, 3)
    done(api, database, operation="add_tag", tag={"id": tag["id"]}, ids=[a, b])
    assert tagged(database, tag["id"]) == {a, b}
    again = done(api, database, operation="add_tag", tag={"id": tag["id"]}, ids=[a, c])
    assert (again["done"], again["failed"]) == (2, 0)  # already tagged is fine
    assert tagged(database, tag["id"]) == {a, b, c}
    done(api, database, operation="remove_tag", tag={"id": tag["id"]}, ids=[a, b])
    assert tagged(database, tag["id"]) == {c}


def test_add_tag_by_name_creates_it_and_works_on_a_filter(
    api: TestClient, database: Database
) -> None:
    pro = users(api, 2, custom_attributes={"plan": "pro"})
    users(api, 1, custom_attributes={"plan": "free"})
    created = queued(api, operation="add_tag", tag={"name": "Paying"}, filter=PRO)
    tag_id = created["arguments"]["tag"]["id"]
    assert created["arguments"]["tag"] == {"id": tag_id, "name": "Paying"}
    run(database)
    assert tagged(database, tag_id) == set(pro)
    finished = done(api, database, operation="remove_tag", tag={"name": "Paying"}, filter=PRO)
    assert finished["done"] == 2
    assert tagged(database, tag_id) == set()


def test_tag_filter_selects_users_that_stop_matching_once(
    api: TestClient, database: Database
) -> None:
    tag = create_tag(api)
    ids = users(api, 5)
    untagged = {"field": "tags", "op": "ne", "value": int(tag["id"])}
    finished = done(api, database, operation="add_tag", tag={"id": tag["id"]}, filter=untagged)
    assert (finished["total"], finished["done"]) == (5, 5)
    assert tagged(database, tag["id"]) == set(ids)


def test_add_to_and_remove_from_a_list(api: TestClient, database: Database) -> None:
    newsletter = create_list(api, "Newsletter")
    a, b, c = users(api, 3, custom_attributes={"plan": "pro"})
    done(api, database, operation="add_to_list", list={"id": newsletter["id"]}, ids=[a, b])
    assert members(database, newsletter["id"]) == {a, b}
    done(api, database, operation="add_to_list", list={"name": "Newsletter"}, filter=PRO)
    assert members(database, newsletter["id"]) == {a, b, c}
    assert api.get(f"/api/v1/lists/{newsletter['id']}").json()["user_count"] == 3
    done(api, database, operation="remove_from_list", list={"id": newsletter["id"]}, ids=[b])
    assert members(database, newsletter["id"]) == {a, c}
    done(api, database, operation="remove_from_list", list={"name": "Newsletter"}, filter=PRO)
    assert members(database, newsletter["id"]) == set()


def test_delete_on_ids(api: TestClient, database: Database) -> None:
    a, b, kept = users(api, 3)
    finished = done(api, database, operation="delete", ids=[a, b])
    assert (finished["status"], finished["done"], finished["failed"]) == ("succeeded", 2, 0)
    assert existing(database, [a, b, kept]) == {kept}
    assert api.get(f"/api/v1/users/{a}").status_code == 404


def test_delete_on_a_filter(api: TestClient, database: Database) -> None:
    pro = users(api, 3, custom_attributes={"plan": "pro"})
    free = users(api, 2, custom_attributes={"plan": "free"})
    finished = done(api, database, operation="delete", filter=PRO)
    assert (finished["total"], finished["done"]) == (3, 3)
    assert existing(database, pro + free) == set(free)


def test_everyone_is_the_empty_and(api: TestClient, database: Database) -> None:
    ids = users(api, 3)
    finished = done(
        api, database, operation="set_attribute", attribute="language", value="de",
        filter={"and": []},
    )  # fmt: skip
    assert finished["done"] == 3
    assert {api.get(f"/api/v1/users/{id}").json()["language"] for id in ids} == {"de"}


def test_a_filter_matching_nobody_succeeds_with_nothing_done(
    api: TestClient, database: Database
) -> None:
    users(api, 2, custom_attributes={"plan": "free"})
    finished = done(api, database, operation="delete", filter=PRO)
    assert (finished["status"], finished["total"], finished["done"]) == ("succeeded", 0, 0)


def test_merged_away_users_are_not_selected(api: TestClient, database: Database) -> None:
    survivor = create_user(api, custom_attributes={"plan": "pro"})
    merged = create_user(api, user_id=..., email=..., custom_attributes={"plan": "pro"})
    response = api.post(f"/api/v1/users/{survivor['id']}/merge", json={"from": merged["id"]})
    assert response.status_code == 200, response.text
    finished = done(
        api, database, operation="set_attribute", attribute="city", value="Rome", filter=PRO
    )
    assert (finished["total"], finished["done"]) == (1, 1)
    by_id = api.post(
        "/api/v1/users/bulk", json={"operation": "delete", "ids": [survivor["id"], merged["id"]]}
    )
    assert by_id.status_code == 404
    assert by_id.json()["errors"][0]["field"] == "ids.1"


def test_ids_may_be_numbers(api: TestClient, database: Database) -> None:
    tag = create_tag(api)
    a, b = users(api, 2)
    done(api, database, operation="add_tag", tag={"id": int(tag["id"])}, ids=[int(a), int(b)])
    assert tagged(database, tag["id"]) == {a, b}
