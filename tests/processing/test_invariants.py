"""Identity invariants under random ingestion, merges and undos (R-ID-1..8, R-ING-7).

A hypothesis state machine sends identify, track, page and alias messages through /v1 (one at a
time and in batches, some of them resent with the same messageId) over a small pool of userIds
and anonymousIds, placeholders ("null", "undefined", …) included, and runs the processor after
each request; it also merges users and undoes merges through the REST API. Every example runs
in a fresh environment (tests.conftest.make_tenant with a unique slug), which keeps examples
apart without emptying the database.

After every step (the machine's invariant):
- each anonymous id belongs to exactly one user, and that user is live (R-ID-1);
- every userId and anonymousId the machine got accepted still names someone; no placeholder
  was ever stored as an identity (R-ID-6);
- no two users with different user_ids were merged implicitly: every hidden user that still
  holds a user_id was merged away by an explicit (REST) merge, and no implicit merge ever took
  a user_id off its source (R-ID-5);
- the merge log and the users agree: a user is hidden exactly when one merge from it is in force;
- events rows == the distinct accepted track/page messageIds (dedupe, R-ING-7), and nothing
  failed but what must (an alias without a userId);
- every event belongs to a live user: the one its original owner is now part of, following the
  merges in force (after an undo, the original owner again; R-ID-7).

And around single steps:
- ingestion never takes a user_id off a live user or hides an identified user (R-ID-5);
- a track/page/identify lands on the user of its userId, else of its userKey, else of its
  anonymousId (R-ID-2), and identify's trait is on that user;
- a resent message has no effect at all;
- a merge followed at once by its undo restores every user, identity and event exactly.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import inspect, select

from audience.db import Database
from audience.events.models import Event
from audience.ingest import processor
from audience.ingest.models import FailedMessage, InboxMessage
from audience.ingest.processor import Processor
from audience.users.identity import is_blocked
from audience.users.models import Identity, Merge, User
from tests.conftest import PG_URL, Tenant, make_tenant
from tests.processing.helpers import deliver, message, send, user_by

USER_IDS = ("u1", "u2", "u3")
ANONYMOUS_IDS = ("a1", "a2", "a3", "a4")
PLACEHOLDERS = ("null", "undefined", "0", " Guest ", "'none'")

user_ids = st.sampled_from((None, *USER_IDS, "null", "undefined"))
anonymous_ids = st.sampled_from((None, *ANONYMOUS_IDS, "0", " Guest "))
previous_ids = st.sampled_from((*ANONYMOUS_IDS, *USER_IDS, "'none'"))
USER_COLUMNS = [column.key for column in inspect(User).columns]


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """What a message should say; turned into a payload when it is sent (ids resolved then)."""
    kind = draw(st.sampled_from(("identify", "track", "page", "alias")))
    spec: dict[str, Any] = {
        "kind": kind,
        "userId": draw(user_ids),
        "anonymousId": draw(anonymous_ids),
        "plan": draw(st.sampled_from(("free", "pro", "team"))),
        # index into the environment's users (hidden ones too): send its userKey
        "user_key": draw(st.one_of(st.none(), st.integers(0, 7))),
    }
    if kind == "alias":
        spec["previousId"] = draw(previous_ids)
    return spec


def _effective(value: str | None) -> str | None:
    """What the accept path keeps of an id: placeholders count as absent (R-ID-6)."""
    return None if value is None or is_blocked(value) else value


class State:
    """One environment's identity state, read in one transaction."""

    def __init__(self, database: Database, environment_id: int) -> None:
        with database.transaction(write=False) as session:
            users = list(session.scalars(select(User).where(User.environment_id == environment_id)))
            self.users = {user.id: {c: getattr(user, c) for c in USER_COLUMNS} for user in users}
            self.identities = {
                value: (id, user_id)
                for id, user_id, value in session.execute(
                    select(Identity.id, Identity.user_id, Identity.value).where(
                        Identity.environment_id == environment_id
                    )
                )
            }
            self.events = {
                message_id: (id, user_id)
                for id, user_id, message_id in session.execute(
                    select(Event.id, Event.user_id, Event.message_id).where(
                        Event.environment_id == environment_id
                    )
                )
            }
            self.event_rows = len(self.events)
            self.merges = list(
                session.scalars(
                    select(Merge).where(Merge.environment_id == environment_id).order_by(Merge.id)
                )
            )
            self.failed = list(
                session.execute(
                    select(FailedMessage.message_id, FailedMessage.error_code).where(
                        FailedMessage.environment_id == environment_id
                    )
                )
            )
            self.waiting = len(
                list(
                    session.scalars(
                        select(InboxMessage.id).where(InboxMessage.environment_id == environment_id)
                    )
                )
            )

    def live(self) -> list[int]:
        return sorted(id for id, user in self.users.items() if user["merged_into_id"] is None)

    def by_user_id(self, user_id: str) -> int | None:
        return next((id for id, u in self.users.items() if u["user_id"] == user_id), None)

    def survivor(self, id: int) -> int:
        for _ in range(len(self.users) + 1):
            parent = self.users[id]["merged_into_id"]
            if parent is None:
                return id
            id = parent
        raise AssertionError(f"a cycle of merges through user {id}")

    def exact(self) -> tuple[Any, ...]:
        """Everything a merge and its undo, or a resent message, may not change."""
        return (self.users, self.identities, self.events, self.waiting)


class Identities(RuleBasedStateMachine):
    def __init__(self, app: TestClient, database: Database) -> None:
        super().__init__()
        self.app, self.database = app, database
        self.tenant: Tenant = make_tenant(app, database, f"inv-{uuid.uuid4().hex[:12]}")
        self.api = self.tenant.client
        self.ids = itertools.count(1)
        self.sent: list[dict[str, Any]] = []  # accepted payloads, for resending
        self.event_ids: set[str] = set()  # distinct accepted track/page messageIds
        self.must_fail: set[str] = set()  # accepted messages that must fail (R-ING-9)
        self.user_ids: set[str] = set()  # userIds of applied messages
        self.anonymous_ids: set[str] = set()  # anonymousIds of applied messages

    def state(self) -> State:
        return State(self.database, self.tenant.id)

    # --- ingestion ----------------------------------------------------------------------------

    def payload(self, spec: dict[str, Any], state: State) -> dict[str, Any]:
        kind = spec["kind"]
        body: dict[str, Any] = {"type": kind, "messageId": f"{self.tenant.slug}-{next(self.ids)}"}
        if spec["userId"] is not None:
            body["userId"] = spec["userId"]
        if spec["anonymousId"] is not None:
            body["anonymousId"] = spec["anonymousId"]
        if kind == "identify":
            body["traits"] = {"plan": spec["plan"]}
        elif kind == "track":
            body["event"] = "Clicked"
        elif kind == "page":
            body["name"] = "Home"
        else:
            body["previousId"] = spec["previousId"]
        if spec["user_key"] is not None and state.users and kind != "alias":
            users = sorted(state.users)
            key = state.users[users[spec["user_key"] % len(users)]]["user_key"]
            body["context"] = {"externalId": [{"type": "userKey", "id": key}]}
        return body

    def send(self, bodies: list[dict[str, Any]]) -> list[bool]:
        """Posts one batch and processes it; returns which messages were accepted."""
        response = self.app.post(
            "/v1/batch", json={"batch": bodies}, auth=(self.tenant.app_token, "")
        )
        assert response.status_code == 200, response.text
        reply = response.json()
        rejected = {item["index"] for item in reply["rejected"]}
        accepted = [n not in rejected for n in range(len(bodies))]
        for body, ok in zip(bodies, accepted, strict=True):
            user_id, anonymous_id = (
                _effective(body.get("userId")),
                _effective(body.get("anonymousId")),
            )
            # The accept path's rule: an id must be left; alias also needs its previousId.
            expected = (user_id or anonymous_id) is not None and (
                body["type"] != "alias" or _effective(body["previousId"]) is not None
            )
            assert ok == expected, (body, reply)
            if not ok:
                continue
            self.sent.append(body)
            if body["type"] in ("track", "page"):
                self.event_ids.add(body["messageId"])
            if body["type"] == "alias" and user_id is None:
                self.must_fail.add(body["messageId"])
                continue
            if user_id:
                self.user_ids.add(user_id)
            if body["type"] != "alias" and anonymous_id:
                self.anonymous_ids.add(anonymous_id)  # (alias leaves its anonymousId alone)
            if body["type"] == "alias" and not body["previousId"].startswith("u"):
                self.anonymous_ids.add(body["previousId"])
        assert reply["accepted"] == sum(accepted)
        Processor(self.database).drain()
        return accepted

    def check_ingestion_keeps_user_ids(self, before: State, after: State) -> None:
        """R-ID-5: ingestion never rewrites a user_id nor merges an identified user away."""
        for id in before.live():
            user_id = before.users[id]["user_id"]
            if user_id is not None:
                assert after.users[id]["merged_into_id"] is None, (id, user_id)
                assert after.users[id]["user_id"] == user_id, (id, user_id)

    @rule(spec=specs())
    def send_one(self, spec: dict[str, Any]) -> None:
        before = self.state()
        body = self.payload(spec, before)
        (accepted,) = self.send([body])
        after = self.state()
        self.check_ingestion_keeps_user_ids(before, after)
        if not accepted or body["messageId"] in self.must_fail or body["type"] == "alias":
            return
        # R-ID-2: userId first (R-ID-5: the message is theirs), then userKey, then anonymousId.
        user_id = _effective(body.get("userId"))
        keyed = [
            id
            for id in after.live()
            if "context" in body
            and after.users[id]["user_key"] == body["context"]["externalId"][0]["id"]
        ]
        if user_id is not None:
            holder = after.by_user_id(user_id)
            owner = None if holder is None else after.survivor(holder)
        elif keyed:
            owner = keyed[0]
        else:
            owner = after.identities[_effective(body["anonymousId"]) or ""][1]
        assert owner is not None and after.users[owner]["merged_into_id"] is None, body
        if body["type"] == "identify":
            assert after.users[owner]["custom_attributes"].get("plan") == body["traits"]["plan"]
        else:
            assert after.events[body["messageId"]][1] == owner, body

    @rule(batch=st.lists(specs(), min_size=2, max_size=4), twice=st.booleans())
    def send_batch(self, batch: list[dict[str, Any]], twice: bool) -> None:
        """Several messages in one request (one processor batch); maybe one of them twice."""
        before = self.state()
        bodies = [self.payload(spec, before) for spec in batch]
        if twice:
            bodies.append(dict(bodies[0]))
        self.send(bodies)
        self.check_ingestion_keeps_user_ids(before, self.state())

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """R-ING-7: a messageId seen before has no further effect (and still gets a 2xx)."""
        body = data.draw(st.sampled_from(self.sent))
        before = self.state()
        self.send([body])
        assert self.state().exact() == before.exact()

    # --- explicit merges and undos (REST) -----------------------------------------------------

    def merge(self, state: State, into: int, source: int) -> Any:
        live = state.live()
        target_id, source_id = live[into % len(live)], live[source % len(live)]
        response = self.api.post(f"/api/v1/users/{target_id}/merge", json={"from": str(source_id)})
        if source_id == target_id:
            assert response.status_code == 422, response.text
            return None
        assert response.status_code == 200, response.text
        after = self.state()
        assert after.users[source_id]["merged_into_id"] == target_id
        assert after.users[target_id]["merged_into_id"] is None
        return response.json()

    @precondition(lambda self: self.sent)
    @rule(into=st.integers(0, 7), source=st.integers(0, 7))
    def merge_users(self, into: int, source: int) -> None:
        state = self.state()
        if state.live():
            self.merge(state, into, source)

    @precondition(lambda self: self.sent)
    @rule(pick=st.integers(0, 15))
    def undo_merge(self, pick: int) -> None:
        """Any merge, implicit ones included; expect 409 exactly when the docs say so."""
        state = self.state()
        if not state.merges:
            return
        merge = state.merges[pick % len(state.merges)]
        source, target = state.users[merge.from_user_id], state.users[merge.into_user_id]
        response = self.api.post(f"/api/v1/merges/{merge.id}/undo")
        if merge.undone_at is not None or target["merged_into_id"] is not None:
            assert response.status_code == 409, response.text
            assert self.state().exact() == state.exact()
            return
        assert source["merged_into_id"] == merge.into_user_id
        assert response.status_code == 200, response.text
        after = self.state()
        assert after.users[merge.from_user_id]["merged_into_id"] is None
        for value, (id, _) in state.identities.items():
            if id in merge.moved["identities"]:
                assert after.identities[value][1] == merge.from_user_id, value

    @precondition(lambda self: self.sent)
    @rule(into=st.integers(0, 7), source=st.integers(0, 7))
    def merge_then_undo_restores_everything(self, into: int, source: int) -> None:
        """docs/api/merges.md: undoing merges in reverse order restores the state exactly."""
        before = self.state()
        if not before.live():
            return
        merged = self.merge(before, into, source)
        if merged is None:
            return
        response = self.api.post(f"/api/v1/merges/{merged['id']}/undo")
        assert response.status_code == 200, response.text
        after = self.state()
        for id, row in before.users.items():
            assert after.users[id] == row, id
        assert after.exact() == before.exact()

    # --- the invariant ------------------------------------------------------------------------

    @invariant()
    def identities_are_consistent(self) -> None:
        state = self.state()
        live = set(state.live())
        assert state.waiting == 0

        # Nothing failed but aliases without a userId (missing_user_id, R-ING-9).
        assert {mid for mid, _ in state.failed} == self.must_fail, state.failed
        assert {code for _, code in state.failed} <= {"missing_user_id"}

        # R-ID-1, R-ID-6: an anonymous id names one user, a live one; no placeholder stored.
        for value, (_, owner) in state.identities.items():
            assert owner in live, (value, owner)
            assert not is_blocked(value), value
        assert self.anonymous_ids <= set(state.identities)
        held = {user["user_id"] for user in state.users.values() if user["user_id"]}
        assert self.user_ids <= held
        assert not any(is_blocked(user_id) for user_id in held)

        # The merge log and the users agree; R-ID-5: only explicit merges join identified users.
        in_force = {}
        for merge in state.merges:
            if merge.undone_at is None:
                assert merge.from_user_id not in in_force, "two merges in force from one user"
                in_force[merge.from_user_id] = merge
            if merge.reason != "api":
                assert "user_id" not in merge.moved.get("from", {}), (
                    f"implicit merge {merge.id} took a user_id off user {merge.from_user_id}"
                )
        for id, user in state.users.items():
            merge = in_force.get(id)
            assert user["merged_into_id"] == (None if merge is None else merge.into_user_id), id
            if merge is not None and user["user_id"] is not None:
                assert merge.reason == "api", (
                    f"user {id} ({user['user_id']}) was merged into user {merge.into_user_id} "
                    f"implicitly ({merge.reason})"
                )
            state.survivor(id)  # no cycles

        # R-ING-7: one events row per distinct accepted track/page messageId.
        assert state.event_rows == len(self.event_ids)
        assert set(state.events) == self.event_ids

        # Every event is on a live user: the survivor of its original owner (the source of the
        # first merge that moved it, else its owner now).
        original: dict[int, int] = {}
        for merge in state.merges:
            for run in merge.moved.get("events", []):
                low, high = (run, run) if isinstance(run, int) else run
                for event_id in range(low, high + 1):
                    original.setdefault(event_id, merge.from_user_id)
        for message_id, (event_id, owner) in state.events.items():
            assert owner in live, f"event {message_id} is on merged-away user {owner}"
            first = original.get(event_id, owner)
            assert owner == state.survivor(first), (message_id, owner, first)


def test_identity_invariants_hold_under_random_ingestion_merges_and_undos(
    app: TestClient, database: Database
) -> None:
    run_state_machine_as_test(
        lambda: Identities(app, database),
        settings=settings(
            max_examples=int(os.environ.get("INV_EXAMPLES", "25")),
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# --- R-ID-8: a REST merge racing a processor batch --------------------------------------------


def _race_merge_with_processor(
    app: TestClient, database: Database, tenant: Tenant, raced: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Holds the processor between resolving its batch and writing it (as a batch of 500 takes
    a while there), merges the visitor into the survivor through the REST API in that window,
    lets both finish. On SQLite the merge waits for the processor's write lock instead."""
    api = tenant.client
    visitor, survivor = user_by(api, anonymous_id="racer"), user_by(api, user_id="survivor")
    send(app, tenant, raced)
    resolved, merged = threading.Event(), threading.Event()
    finish = processor.Batch.finish

    def slow_finish(batch: processor.Batch) -> None:
        resolved.set()
        merged.wait(timeout=3)
        finish(batch)

    replies: list[Any] = []

    def merge() -> None:
        replies.append(
            api.post(f"/api/v1/users/{survivor['id']}/merge", json={"from": visitor["id"]})
        )
        merged.set()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(processor.Batch, "finish", slow_finish)
        worker = threading.Thread(target=Processor(database).drain)
        worker.start()
        assert resolved.wait(timeout=30)
        merger = threading.Thread(target=merge)
        merger.start()
        merger.join(timeout=60)
        worker.join(timeout=60)
    assert not worker.is_alive() and not merger.is_alive()
    assert replies[0].status_code == 200, replies[0].text
    return visitor, survivor


def _events_by_owner(database: Database, tenant: Tenant) -> dict[int, list[str]]:
    with database.transaction(write=False) as session:
        rows = session.execute(
            select(Event.user_id, Event.name)
            .where(Event.environment_id == tenant.id)
            .order_by(Event.id)
        )
        owners: dict[int, list[str]] = {}
        for user_id, name in rows:
            owners.setdefault(user_id, []).append(name)
        return owners


def test_a_rest_merge_racing_a_processor_batch_loses_no_event(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    deliver(app, database, tenant, message("track", anonymousId="racer", event="Before"))
    deliver(app, database, tenant, message("identify", userId="survivor"))
    raced = message("track", anonymousId="racer", event="Raced")
    _, survivor = _race_merge_with_processor(app, database, tenant, raced)
    assert _events_by_owner(database, tenant) == {int(survivor["id"]): ["Before", "Raced"]}


@pytest.mark.xfail(
    bool(PG_URL),
    strict=True,
    reason="PostgreSQL: Resolver._by_lookup reads the user an email/phone lookup names without "
    "the FOR NO KEY UPDATE lock prefetch takes, so a REST merge committing before the batch "
    "is written leaves the event on the merged-away user (R-ID-8)",
)
def test_a_rest_merge_racing_a_lookup_message_loses_no_event(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("identify", anonymousId="racer", traits={"email": "racer@example.com"}),
    )
    deliver(app, database, tenant, message("identify", userId="survivor"))
    raced = message(
        "track",
        anonymousId="elsewhere",
        event="Raced",
        properties={"email": "racer@example.com"},
        integrations={"audience": {"lookup": "email"}},
    )
    visitor, survivor = _race_merge_with_processor(app, database, tenant, raced)
    owners = _events_by_owner(database, tenant)
    assert owners == {int(survivor["id"]): ["Raced"]}, f"visitor {visitor['id']}: {owners}"
