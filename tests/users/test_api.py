"""The users REST API through HTTP on the real database."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audience.db import Database
from audience.users.models import AttributeChange, Identity, User
from tests.factories import create_user


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list"
    return dict(body["errors"][0])


def test_create_user_returns_the_intercom_shaped_object(api: TestClient) -> None:
    user = create_user(
        api,
        user_id="25",
        email="Joe@Example.com",
        first_name="Joe",
        last_name="Example",
        signed_up_at=1392731331,
        custom_attributes={"paid_subscriber": True, "monthly_spend": 155.5},
    )
    assert user["type"] == "user"
    assert user["id"].isdigit()
    assert user["user_id"] == "25"
    assert user["email"] == "Joe@Example.com"
    assert user["name"] == "Joe Example"
    assert user["signed_up_at"] == 1392731331
    assert isinstance(user["created_at"], int) and isinstance(user["updated_at"], int)
    assert len(user["user_key"]) >= 12
    assert user["anonymous"] is False and user["kind"] == "identified" and user["contact"] is True
    assert user["status"] == "user"
    assert user["custom_attributes"] == {"paid_subscriber": True, "monthly_spend": 155.5}
    assert user["avatar"] == {"type": "avatar", "image_url": None}
    assert user["location_data"]["type"] == "location_data"
    assert user["social_profiles"] == {"type": "social_profile.list", "social_profiles": []}
    assert user["companies"] == {"type": "company.list", "companies": []}
    assert user["segments"] == {"type": "segment.list", "segments": []}
    assert user["tags"] == {"type": "tag.list", "tags": []}
    assert user["last_seen_ip"] is None and user["user_agent_data"] is None


def test_create_user_without_identifying_values_is_an_anonymous_contact(api: TestClient) -> None:
    user = create_user(api, user_id=..., email=..., first_name="Visitor")
    assert user["type"] == "contact"
    assert user["anonymous"] is True and user["kind"] == "anonymous"
    assert user["contact"] is False
    assert user["status"] == "visitor"


def test_user_with_only_an_fcm_key_is_a_contact_but_not_identified(api: TestClient) -> None:
    user = create_user(api, user_id=..., email=..., fcm_key="token-1")
    assert user["kind"] == "anonymous" and user["contact"] is True


def test_create_user_stores_the_row(api: TestClient, database: Database, tenant: Any) -> None:
    user = create_user(api, user_id="row-1", city="Dublin")
    with database.transaction() as session:
        row = session.get(User, int(user["id"]))
        assert row is not None
        assert (row.environment_id, row.user_id, row.city) == (tenant.id, "row-1", "Dublin")


def test_phone_is_normalised_to_e164_and_the_original_kept(api: TestClient) -> None:
    user = create_user(api, phone="+1 (202) 555-0146")
    assert user["phone"] == "+12025550146"
    assert user["phone_original"] == "+1 (202) 555-0146"


def test_phone_that_cannot_be_read_is_kept_as_given(api: TestClient) -> None:
    user = create_user(api, phone="ext. 12")
    assert user["phone"] == "ext. 12"


def test_name_is_derived_from_first_and_last_name_until_given(api: TestClient) -> None:
    user = create_user(api, first_name="Ann", last_name="Lee")
    assert user["name"] == "Ann Lee"
    changed = api.patch(f"/api/v1/users/{user['id']}", json={"first_name": "Anna"}).json()
    assert changed["name"] == "Anna Lee"
    named = api.patch(f"/api/v1/users/{user['id']}", json={"name": "Dr. A. Lee"}).json()
    again = api.patch(f"/api/v1/users/{user['id']}", json={"last_name": "Li"}).json()
    assert named["name"] == "Dr. A. Lee" and again["name"] == "Dr. A. Lee"


def test_avatar_object_writes_the_avatar_url(api: TestClient) -> None:
    user = create_user(api, avatar={"image_url": "https://example.org/a.jpg"})
    assert user["avatar"]["image_url"] == "https://example.org/a.jpg"
    assert user["avatar_url"] == "https://example.org/a.jpg"


def test_social_urls_appear_as_social_profiles(api: TestClient) -> None:
    user = create_user(api, twitter_url="https://twitter.com/joe")
    profiles = user["social_profiles"]["social_profiles"]
    assert profiles == [
        {"type": "social_profile", "name": "twitter", "url": "https://twitter.com/joe"}
    ]


def test_create_user_with_taken_user_id_is_a_conflict(api: TestClient) -> None:
    create_user(api, user_id="dup")
    response = api.post("/api/v1/users", json={"user_id": "dup"})
    assert response.status_code == 409
    assert error_of(response)["field"] == "user_id"


@pytest.mark.parametrize(
    "field",
    [
        "id",
        "created_at",
        "updated_at",
        "environment_id",
        "merged_into_id",
        "user_key",
        "session_count",
    ],
)
def test_system_fields_cannot_be_written(api: TestClient, field: str) -> None:
    response = api.post("/api/v1/users", json={"user_id": "x", field: 5})
    assert response.status_code == 422
    assert error_of(response)["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": 5}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"email": " a@b.co"}, "email"),
        ({"user_id": " padded "}, "user_id"),
        ({"user_id": "x" * 256}, "user_id"),
        ({"user_id": "undefined"}, "user_id"),
        ({"user_id": "'NULL'"}, "user_id"),
        ({"gender": "robot"}, "gender"),
        ({"signed_up_at": "yesterday"}, "signed_up_at"),
        ({"signed_up_at": 10**20}, "signed_up_at"),
        ({"unsubscribed_from_emails": "maybe"}, "unsubscribed_from_emails"),
        ({"custom_attributes": []}, "custom_attributes"),
        ({"custom_attributes": {"nested": {"a": 1}}}, "custom_attributes.nested"),
        ({"custom_attributes": {"bad.name": 1}}, "custom_attributes.bad.name"),
        ({"custom_attributes": {"$set": 1}}, "custom_attributes.$set"),
        ({"custom_attributes": {"long": "x" * 65_536}}, "custom_attributes.long"),
        ({"custom_attributes": {"n" * 256: 1}}, "custom_attributes." + "n" * 256),
    ],
)
def test_bad_user_fields_are_rejected_naming_the_field(
    api: TestClient, database: Database, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/users", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0


def test_over_limit_string_names_the_limit(api: TestClient) -> None:
    response = api.post("/api/v1/users", json={"custom_attributes": {"bio": "x" * 65_536}})
    assert "65535" in error_of(response)["message"]


def test_more_than_500_custom_attributes_is_rejected(api: TestClient) -> None:
    many = {f"a{i}": i for i in range(501)}
    response = api.post("/api/v1/users", json={"custom_attributes": many})
    assert response.status_code == 422
    assert "500" in error_of(response)["message"]


def test_invalid_json_is_a_400(api: TestClient) -> None:
    response = api.post(
        "/api/v1/users", content=b'{"user_id": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_get_user_by_id(api: TestClient) -> None:
    user = create_user(api)
    response = api.get(f"/api/v1/users/{user['id']}")
    assert response.status_code == 200
    assert response.json()["user_id"] == user["user_id"]


@pytest.mark.parametrize("id", ["999999", "abc", "-1", "1e3", "99999999999999999999999"])
def test_unknown_user_ids_are_404(api: TestClient, id: str) -> None:
    for method in ("get", "patch", "delete"):
        kwargs = {"json": {"city": "x"}} if method == "patch" else {}
        response = getattr(api, method)(f"/api/v1/users/{id}", **kwargs)
        assert response.status_code == 404, (method, response.text)
        assert error_of(response)["code"] == "not_found"


def test_patch_changes_only_the_given_fields(api: TestClient) -> None:
    user = create_user(api, city="Dublin", country="Ireland")
    response = api.patch(f"/api/v1/users/{user['id']}", json={"city": "Cork"})
    assert response.status_code == 200
    assert (response.json()["city"], response.json()["country"]) == ("Cork", "Ireland")


def test_patch_null_removes_standard_and_custom_values(api: TestClient) -> None:
    user = create_user(api, city="Dublin", custom_attributes={"plan": "pro", "seats": 3})
    body = {"city": None, "custom_attributes": {"plan": None}}
    changed = api.patch(f"/api/v1/users/{user['id']}", json=body).json()
    assert changed["city"] is None
    assert changed["custom_attributes"] == {"seats": 3}


def test_patch_merges_custom_attributes(api: TestClient) -> None:
    user = create_user(api, custom_attributes={"plan": "pro"})
    changed = api.patch(f"/api/v1/users/{user['id']}", json={"custom_attributes": {"seats": 2}})
    assert changed.json()["custom_attributes"] == {"plan": "pro", "seats": 2}


def test_custom_attribute_operations(api: TestClient) -> None:
    user = create_user(api, custom_attributes={"visits": 1, "tags": ["a"], "plan": "free"})
    ops = {
        "visits": {"$add": 2},
        "tags": {"$union": ["a", "b"]},
        "plan": {"$set_once": "pro"},
        "first_touch": {"$set_once": "ads"},
        "history": {"$append": "x"},
    }
    attrs = api.patch(f"/api/v1/users/{user['id']}", json={"custom_attributes": ops}).json()
    assert attrs["custom_attributes"] == {
        "visits": 3,
        "tags": ["a", "b"],
        "plan": "free",
        "first_touch": "ads",
        "history": ["x"],
    }
    more = {"tags": {"$remove": "a"}, "visits": {"$unset": True}}
    attrs = api.patch(f"/api/v1/users/{user['id']}", json={"custom_attributes": more}).json()
    assert attrs["custom_attributes"] == {
        "tags": ["b"],
        "plan": "free",
        "first_touch": "ads",
        "history": ["x"],
    }


def test_add_to_a_string_attribute_is_rejected(api: TestClient) -> None:
    user = create_user(api, custom_attributes={"plan": "pro"})
    body = {"custom_attributes": {"plan": {"$add": 1}}}
    response = api.patch(f"/api/v1/users/{user['id']}", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == "custom_attributes.plan"


def test_rejected_patch_applies_nothing(api: TestClient) -> None:
    user = create_user(api, city="Dublin", custom_attributes={"seats": 1})
    body = {"city": "Cork", "custom_attributes": {"plan": "pro", "seats": "many"}}
    response = api.patch(f"/api/v1/users/{user['id']}", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == "custom_attributes.seats"
    again = api.get(f"/api/v1/users/{user['id']}").json()
    assert again["city"] == "Dublin" and again["custom_attributes"] == {"seats": 1}
    assert api.get("/api/v1/data_attributes").json()["total_count"] == 1


def test_patch_to_another_users_user_id_is_a_conflict(api: TestClient) -> None:
    first, second = create_user(api), create_user(api)
    response = api.patch(f"/api/v1/users/{second['id']}", json={"user_id": first["user_id"]})
    assert response.status_code == 409


def test_delete_user_removes_the_row_and_history(api: TestClient, database: Database) -> None:
    user = create_user(api)
    response = api.delete(f"/api/v1/users/{user['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": user["id"], "object": "user", "deleted": True}
    assert api.get(f"/api/v1/users/{user['id']}").status_code == 404
    with database.transaction() as session:
        assert session.get(User, int(user["id"])) is None
        count = select(func.count()).select_from(AttributeChange)
        assert session.scalar(count.where(AttributeChange.user_id == int(user["id"]))) == 0


@pytest.mark.parametrize("key", ["user_id", "email", "user_key", "phone"])
def test_lookup_by_each_key(api: TestClient, key: str) -> None:
    user = create_user(api, phone="+353 1 234 5678")
    response = api.get("/api/v1/users/lookup", params={key: user[key]})
    assert response.status_code == 200
    assert response.json()["id"] == user["id"]


def test_lookup_by_anonymous_id(api: TestClient, database: Database, tenant: Any) -> None:
    user = create_user(api)
    with database.transaction() as session:
        session.add(
            Identity(
                environment_id=tenant.id,
                user_id=int(user["id"]),
                kind="anonymous_id",
                value="anon-1",
            )
        )
    response = api.get("/api/v1/users/lookup", params={"anonymous_id": "anon-1"})
    assert response.json()["id"] == user["id"]


def test_lookup_email_is_case_insensitive(api: TestClient) -> None:
    user = create_user(api, email="Mixed.Case@Example.com")
    response = api.get("/api/v1/users/lookup", params={"email": "mixed.case@example.COM"})
    assert response.json()["id"] == user["id"]


def test_lookup_phone_in_another_format(api: TestClient) -> None:
    user = create_user(api, phone="+1 202 555 0146")
    response = api.get("/api/v1/users/lookup", params={"phone": "+1-202-555-0146"})
    assert response.json()["id"] == user["id"]


def test_lookup_of_nobody_is_404(api: TestClient) -> None:
    response = api.get("/api/v1/users/lookup", params={"user_id": "ghost"})
    assert response.status_code == 404


def test_lookup_matching_several_users_is_409(api: TestClient) -> None:
    create_user(api, email="shared@example.com")
    create_user(api, email="SHARED@example.com")
    response = api.get("/api/v1/users/lookup", params={"email": "shared@example.com"})
    assert response.status_code == 409
    assert error_of(response)["field"] == "email"


@pytest.mark.parametrize("params", [{}, {"user_id": "a", "email": "b@c.d"}])
def test_lookup_needs_exactly_one_key(api: TestClient, params: dict[str, str]) -> None:
    response = api.get("/api/v1/users/lookup", params=params)
    assert response.status_code == 400


def test_list_users_shape(api: TestClient) -> None:
    for _ in range(3):
        create_user(api)
    body = api.get("/api/v1/users", params={"per_page": 2}).json()
    assert body["type"] == "user.list"
    assert body["total_count"] == 3
    assert len(body["users"]) == 2
    assert body["pages"]["type"] == "pages"
    assert (body["pages"]["page"], body["pages"]["per_page"], body["pages"]["total_pages"]) == (
        1,
        2,
        2,
    )
    assert body["pages"]["next"]["page"] == 2


def test_list_users_page_pagination_visits_everyone_once(api: TestClient) -> None:
    ids = {create_user(api)["id"] for _ in range(7)}
    seen = []
    for page in (1, 2, 3):
        body = api.get("/api/v1/users", params={"per_page": 3, "page": page}).json()
        seen += [user["id"] for user in body["users"]]
    assert sorted(seen) == sorted(ids)


def test_list_users_cursor_pagination_visits_everyone_once(api: TestClient) -> None:
    ids = {create_user(api, city=["b", "a", None][n % 3])["id"] for n in range(8)}
    seen: list[str] = []
    params: dict[str, Any] = {"per_page": 3, "sort": "city", "order": "asc"}
    while True:
        body = api.get("/api/v1/users", params=params).json()
        seen += [user["id"] for user in body["users"]]
        if body["pages"]["next"] is None:
            break
        params["starting_after"] = body["pages"]["next"]["starting_after"]
    assert len(seen) == len(ids) and set(seen) == ids


def test_sort_is_stable_with_ties_broken_by_id(api: TestClient) -> None:
    users = [create_user(api, city="Same") for _ in range(4)]
    asc = api.get("/api/v1/users", params={"sort": "city", "order": "asc"}).json()["users"]
    desc = api.get("/api/v1/users", params={"sort": "city", "order": "desc"}).json()["users"]
    by_id = sorted(int(user["id"]) for user in users)
    assert [int(user["id"]) for user in asc] == by_id
    assert [int(user["id"]) for user in desc] == by_id[::-1]


def test_sort_by_standard_attribute(api: TestClient) -> None:
    for count in (3, 1, 2):
        create_user(api, custom_attributes={}, last_request_at=1_700_000_000 + count)
    body = api.get("/api/v1/users", params={"sort": "last_request_at", "order": "asc"}).json()
    assert [user["last_request_at"] for user in body["users"]] == [
        1_700_000_001,
        1_700_000_002,
        1_700_000_003,
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "password"},
        {"order": "sideways"},
        {"per_page": 151},
        {"per_page": 0},
        {"page": 0},
        {"starting_after": "garbage!"},
    ],
)
def test_bad_list_parameters_are_400(api: TestClient, params: dict[str, Any]) -> None:
    response = api.get("/api/v1/users", params=params)
    assert response.status_code == 400, response.text


def test_cursor_from_another_sort_is_rejected(api: TestClient) -> None:
    for _ in range(3):
        create_user(api)
    cursor = api.get("/api/v1/users", params={"per_page": 1}).json()["pages"]["next"]
    response = api.get(
        "/api/v1/users", params={"sort": "email", "starting_after": cursor["starting_after"]}
    )
    assert response.status_code == 400


@pytest.mark.parametrize("term", ["ann", "ANN.LEE@", "+1202555", "acme-42", "%"])
def test_search_finds_by_name_email_phone_user_id(api: TestClient, term: str) -> None:
    target = create_user(
        api, name="Ann Lee", email="ann.lee@example.com", phone="+12025550100", user_id="acme-42"
    )
    create_user(api, name="Bob", email="bob@example.org", user_id="other")
    found = api.get("/api/v1/users", params={"q": term}).json()["users"]
    if term == "%":
        assert found == []
    else:
        assert [user["id"] for user in found] == [target["id"]]


def test_search_by_user_key(api: TestClient) -> None:
    target = create_user(api)
    found = api.get("/api/v1/users", params={"q": target["user_key"]}).json()["users"]
    assert [user["id"] for user in found] == [target["id"]]


def test_history_records_each_change_with_source(api: TestClient) -> None:
    user = create_user(api, city="Dublin", custom_attributes={"plan": "free"})
    api.patch(
        f"/api/v1/users/{user['id']}", json={"city": "Cork", "custom_attributes": {"plan": "pro"}}
    )
    body = api.get(f"/api/v1/users/{user['id']}/history").json()
    assert body["type"] == "attribute_change.list"
    latest = {change["attribute"]: change for change in body["changes"][:2]}
    assert latest["city"]["old_value"] == "Dublin" and latest["city"]["new_value"] == "Cork"
    plan = latest["custom_attributes.plan"]
    assert (plan["old_value"], plan["new_value"]) == ("free", "pro")
    assert plan["source"] == "api" and plan["source_ref"].startswith("api_key:")


def test_history_of_unchanged_patch_adds_nothing(api: TestClient) -> None:
    user = create_user(api, city="Dublin")
    before = api.get(f"/api/v1/users/{user['id']}/history").json()["total_count"]
    api.patch(f"/api/v1/users/{user['id']}", json={"city": "Dublin"})
    assert api.get(f"/api/v1/users/{user['id']}/history").json()["total_count"] == before


def test_history_timestamps_are_unix_seconds(api: TestClient) -> None:
    user = create_user(api, signed_up_at="2024-01-02T03:04:05Z")
    changes = api.get(f"/api/v1/users/{user['id']}/history").json()["changes"]
    signed = next(change for change in changes if change["attribute"] == "signed_up_at")
    assert signed["new_value"] == 1704164645


@pytest.mark.parametrize(
    ("sort", "value"),
    [
        ("created_at", "foo"),
        ("created_at", 5),
        ("created_at", {"dt": "2024-01-01T00:00:00"}),
        ("created_at", None),
        ("created_at", [1]),
        ("email", "a\x00b"),
    ],
)
def test_forged_cursor_values_are_rejected(api: TestClient, sort: str, value: Any) -> None:
    import base64

    import orjson

    raw = orjson.dumps([sort, True, value, 1, 1])
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = api.get("/api/v1/users", params={"sort": sort, "starting_after": cursor})
    assert response.status_code == 400
    assert error_of(response)["field"] == "starting_after"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a\x00b"}, "name"),
        ({"custom_attributes": {"plan": "p\x00"}}, "custom_attributes.plan"),
        ({"custom_attributes": {"k\x00": 1}}, "custom_attributes.k\x00"),
        ({"custom_attributes": {"l": {"$append": ["\x00"]}}}, "custom_attributes.l"),
        ({"web_push_subscription": {"endpoint": "\x00"}}, "web_push_subscription"),
    ],
)
def test_nul_characters_are_rejected_naming_the_field(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/users", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_nul_in_a_query_parameter_is_400(api: TestClient) -> None:
    response = api.get("/api/v1/users/lookup", params={"email": "a\x00@b.co"})
    assert response.status_code == 400


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_at_the_calendar_edge_are_rejected(api: TestClient, moment: str) -> None:
    response = api.post("/api/v1/users", json={"signed_up_at": moment})
    assert response.status_code == 422
    assert error_of(response)["field"] == "signed_up_at"


def test_concurrent_creates_of_one_user_id_make_one_user(
    api: TestClient, database: Database
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def create(_: int) -> int:
        return int(api.post("/api/v1/users", json={"user_id": "racer"}).status_code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(create, range(16)))
    assert statuses == [200] + [409] * 15
    with database.transaction() as session:
        count = select(func.count()).select_from(User).where(User.user_id == "racer")
        assert session.scalar(count) == 1
