"""Random sequences of merges and undos over a few users, checking the invariants (R-ID-7):

- every event and every anonymous id belongs to exactly one live user: the one its original
  owner is now part of (following the merges in force);
- each live user holds exactly the tags, lists and companies of the users merged into it;
- undoing every merge in reverse order restores the original users and rows exactly.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from audience.db import Database
from audience.users.models import User
from tests.conftest import Tenant
from tests.factories import create_company, create_user, unique
from tests.users.test_merge import (
    T0,
    add_anonymous_id,
    add_to_list,
    at,
    create_list,
    join,
    linked_rows,
    merge,
    set_columns,
    tag,
    track,
    undo,
    user_rows,
)

USERS = 4
profiles = st.fixed_dictionaries(
    {
        "identified": st.booleans(),
        "city": st.sampled_from([None, "Cork", "Oslo"]),
        "plan": st.sampled_from([None, "free", "pro"]),
        "created": st.integers(0, 1000),
        "sessions": st.integers(0, 3),
        "events": st.integers(0, 2),
        "devices": st.integers(0, 2),
        "tags": st.sets(st.sampled_from(["a", "b"])),
        "lists": st.sets(st.sampled_from([0, 1])),
        "companies": st.sets(st.sampled_from([0, 1])),
    }
)
index = st.integers(0, USERS - 1)


class Merges(RuleBasedStateMachine):
    def __init__(self, api: TestClient, database: Database, tenant: Tenant) -> None:
        super().__init__()
        self.api, self.database, self.tenant = api, database, tenant
        self.users: list[dict[str, Any]] = []
        self.parent: dict[int, int] = {}  # merges in force: source id -> survivor id
        self.stack: list[tuple[str, int]] = []  # (merge id, source id), oldest first
        self.undone: list[str] = []

    @initialize(drawn=st.lists(profiles, min_size=USERS, max_size=USERS))
    def create_users(self, drawn: list[dict[str, Any]]) -> None:
        api = self.api
        lists = [create_list(api), create_list(api)]
        companies = [create_company(api), create_company(api)]
        for profile in drawn:
            fields: dict[str, Any] = {"city": profile["city"]}
            if not profile["identified"]:
                fields.update(user_id=..., email=...)
            if profile["plan"]:
                fields["custom_attributes"] = {"plan": profile["plan"]}
            user = create_user(api, **fields)
            set_columns(
                self.database,
                user,
                created_at=at(T0 + profile["created"]),
                session_count=profile["sessions"],
            )
            for n in range(profile["events"]):
                track(api, user, timestamp=T0 + profile["created"] + n)
            for _ in range(profile["devices"]):
                add_anonymous_id(self.database, self.tenant, user, unique("device"))
            for name in sorted(profile["tags"]):
                tag(api, user, name)
            for n in sorted(profile["lists"]):
                add_to_list(api, lists[n], user)
            for n in sorted(profile["companies"]):
                join(api, user, companies[n])
            self.users.append(user)
        self.ids = [int(user["id"]) for user in self.users]
        self.original_users = user_rows(self.database, self.ids)
        self.original_links = linked_rows(self.database, self.ids)

    def survivor(self, id: int) -> int:
        while id in self.parent:
            id = self.parent[id]
        return id

    @rule(source=index, into=index)
    def merge(self, source: int, into: int) -> None:
        source_id, target_id = self.ids[source], self.ids[into]
        response = merge(self.api, self.users[into], self.users[source])
        if source_id == target_id:
            assert response.status_code == 422, response.text
        elif source_id in self.parent or target_id in self.parent:
            assert response.status_code == 409, response.text
        else:
            assert response.status_code == 200, response.text
            self.parent[source_id] = target_id
            self.stack.append((response.json()["id"], source_id))

    @precondition(lambda self: self.stack)
    @rule()
    def undo_latest(self) -> None:
        merge_id, source_id = self.stack.pop()
        response = undo(self.api, merge_id)
        assert response.status_code == 200, response.text
        del self.parent[source_id]
        self.undone.append(merge_id)

    @precondition(lambda self: self.undone)
    @rule(data=st.data())
    def undo_again(self, data: st.DataObject) -> None:
        merge_id = data.draw(st.sampled_from(self.undone))
        assert undo(self.api, merge_id).status_code == 409

    @invariant()
    def rows_belong_to_the_survivor_of_their_owner(self) -> None:
        if not hasattr(self, "ids"):
            return
        live = self.live_ids()
        assert live == {id for id in self.ids if id not in self.parent}
        now = linked_rows(self.database, self.ids)
        expected_events = {
            (id, self.survivor(owner)) for id, owner in self.original_links["events"]
        }
        assert now["events"] == expected_events
        expected_identities = {
            (id, self.survivor(owner), value)
            for id, owner, value in self.original_links["identities"]
        }
        assert now["identities"] == expected_identities
        for kind in ("tags", "lists", "companies"):
            held = {(key, owner) for key, owner, _ in now[kind]}
            expected = {(key, self.survivor(owner)) for key, owner, _ in self.original_links[kind]}
            assert held == expected, kind

    def live_ids(self) -> set[int]:
        with self.database.transaction() as session:
            query = select(User.id).where(User.id.in_(self.ids), User.merged_into_id.is_(None))
            return set(session.scalars(query))

    def teardown(self) -> None:
        if not hasattr(self, "ids"):
            return
        while self.stack:
            self.undo_latest()
        assert user_rows(self.database, self.ids) == self.original_users
        assert linked_rows(self.database, self.ids) == self.original_links


def test_random_merges_and_undos_keep_the_invariants(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    run_state_machine_as_test(
        lambda: Merges(api, database, tenant),
        settings=settings(
            max_examples=20,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
