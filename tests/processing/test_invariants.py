"""Identity invariants under random ingestion, merges and undos (R-ID-1..8, R-ING-7).

A hypothesis state machine sends identify, track, page, group and alias messages through /v1
(one at a time and in batches, some of them twice, some resent later with the same messageId)
over small pools of userIds, anonymousIds, emails and companies, placeholders ("null",
"undefined", …) included, with userKeys (context.externalId) and email lookups
(integrations.audience.lookup) now and then, and runs the processor after each request; it also
merges users and undoes merges (explicit and implicit ones) through the REST API. Every example
runs in a fresh environment (tests.conftest.make_tenant with a unique slug), which keeps
examples apart without emptying the database.

After every step (the machine's invariant):
- the inbox is empty, and nothing failed but what must or may: an alias without a userId
  (missing_user_id), an email lookup matching nobody or several users (lookup_*, R-ING-9);
- each anonymous id belongs to exactly one user, and that user is live (R-ID-1); every userId
  and anonymousId of an applied message still names someone; no placeholder was ever stored as
  an identity (R-ID-6);
- no two users with different user_ids were merged implicitly: every hidden user that still
  holds a user_id was merged away by an explicit (REST) merge, and no implicit merge ever took a
  user_id off its source (R-ID-5);
- the merge log and the users agree: a user is hidden exactly when one merge from it is in force;
- events rows == the distinct applied track/page messageIds (dedupe, R-ING-7);
- every event belongs to a live user: the one its original owner is now part of, following the
  merges in force (after an undo, the original owner again; R-ID-7); tags and company
  memberships are on live users only;
- a live user's page_views equals the page events it holds (merges add both up, undos take both
  back, a resent page counts nothing).

And around single steps:
- ingestion never takes a user_id off a live user or hides an identified user (R-ID-5);
- a message applies to the user of its userId (following an explicit merge to the survivor),
  else of its userKey, else of its email lookup, else of its anonymousId (R-ID-2), which then
  holds its event, its trait, its tag or its company; a lookup fails exactly when it matches
  nobody or several live users;
- a resent message has no effect at all (R-ING-7);
- a merge followed at once by its undo restores every user, identity, event and link exactly.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections import Counter
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
from sqlalchemy import func, inspect, select

from audience.companies.models import Company, Membership
from audience.db import Database
from audience.events.models import Event
from audience.ingest import processor
from audience.ingest.models import FailedMessage, InboxMessage
from audience.ingest.processor import Processor
from audience.tags.models import Tag, UserTag
from audience.users.identity import is_blocked
from audience.users.models import Identity, Merge, User
from tests.conftest import Tenant, make_tenant
from tests.processing.helpers import deliver, message, send, user_by

USER_IDS = ("u1", "u2", "u3")
ANONYMOUS_IDS = ("a1", "a2", "a3", "a4")
EMAILS = ("ann@example.com", "ANN@example.com", "bo@example.com")
COMPANIES = ("c1", "c2")
EXAMPLES = int(os.environ.get("AUDIENCE_INVARIANT_EXAMPLES", "25"))
LOOKUP_FAILURES = {"lookup_not_found", "lookup_ambiguous"}

user_ids = st.sampled_from(USER_IDS)
anonymous_ids = st.sampled_from(ANONYMOUS_IDS)
no_ids = st.sampled_from((None, "null", "undefined", "0", " Guest ", "'none'"))
# Which ids a message carries: a visitor, someone logging in, an identified user (server side),
# or nothing usable (rejected at accept time, or an id dropped as a placeholder).
shapes = st.sampled_from(("anonymous", "both", "user", "anonymous", "both", "none"))
previous_ids = st.sampled_from((*ANONYMOUS_IDS, *USER_IDS, "'none'"))
USER_COLUMNS = [column.key for column in inspect(User).columns]


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """What a message should say; turned into a payload when it is sent (userKeys chosen then)."""
    kind = draw(st.sampled_from(("identify", "track", "page", "alias", "group")))
    shape = draw(shapes)
    spec: dict[str, Any] = {
        "kind": kind,
        "userId": draw(user_ids if shape in ("both", "user") else no_ids),
        "anonymousId": draw(anonymous_ids if shape in ("both", "anonymous") else no_ids),
        "plan": draw(st.sampled_from(("free", "pro", "team"))),
        "email": draw(st.sampled_from((None, None, *EMAILS))),
        "lookup": draw(st.integers(0, 3)) == 0,  # look the user up by that email
        "tag": draw(st.booleans()),
        "groupId": draw(st.sampled_from(COMPANIES)),
        # index into the environment's users (merged-away ones too): send its userKey
        "user_key": draw(st.one_of(st.none(), st.integers(0, 7))),
        "previousId": draw(previous_ids),
    }
    return spec


SPEC_DEFAULTS: dict[str, Any] = {
    "plan": "free",
    "email": None,
    "lookup": False,
    "tag": False,
    "groupId": COMPANIES[0],
    "user_key": None,
    "previousId": ANONYMOUS_IDS[0],
}


def _effective(value: str | None) -> str | None:
    """What the accept path keeps of an id: placeholders count as absent (R-ID-6)."""
    return None if value is None or is_blocked(value) else value


class State:
    """One environment's identity state, read in one transaction."""

    def __init__(self, database: Database, environment_id: int) -> None:
        env = environment_id
        with database.transaction(write=False) as session:
            users = list(session.scalars(select(User).where(User.environment_id == env)))
            self.users = {user.id: {c: getattr(user, c) for c in USER_COLUMNS} for user in users}
            self.identities = {
                value: (id, user_id)
                for id, user_id, value in session.execute(
                    select(Identity.id, Identity.user_id, Identity.value).where(
                        Identity.environment_id == env
                    )
                )
            }
            rows = session.execute(
                select(Event.id, Event.user_id, Event.message_id, Event.kind).where(
                    Event.environment_id == env
                )
            ).all()
            self.event_rows = len(rows)
            self.events = {message_id: (id, user_id) for id, user_id, message_id, _ in rows}
            self.page_events = Counter(user_id for _, user_id, _, kind in rows if kind == "page")
            tags = session.execute(
                select(Tag.name, UserTag.user_id, UserTag.tagged_at)
                .join(Tag, Tag.id == UserTag.tag_id)
                .where(Tag.environment_id == env)
            )
            self.tags = {tuple(row) for row in tags}
            memberships = session.execute(
                select(Company.company_id, Membership.user_id, Membership.member_since)
                .join(Company, Company.id == Membership.company_id)
                .where(Company.environment_id == env)
            )
            self.memberships = {tuple(row) for row in memberships}
            self.merges = list(
                session.scalars(select(Merge).where(Merge.environment_id == env).order_by(Merge.id))
            )
            failures = session.execute(
                select(FailedMessage.message_id, FailedMessage.error_code).where(
                    FailedMessage.environment_id == env
                )
            )
            self.failures = Counter(tuple(row) for row in failures)
            self.failure_codes = set(
                session.scalars(
                    select(FailedMessage.error_code).where(FailedMessage.environment_id == env)
                )
            )
            self.waiting = session.scalar(
                select(func.count())
                .select_from(InboxMessage)
                .where(InboxMessage.environment_id == env)
            )

    def live(self) -> list[int]:
        return sorted(id for id, user in self.users.items() if user["merged_into_id"] is None)

    def by_user_id(self, user_id: str) -> int | None:
        return next((id for id, u in self.users.items() if u["user_id"] == user_id), None)

    def by_email(self, email: str) -> list[int]:
        return [
            id for id in self.live() if (self.users[id]["email"] or "").lower() == email.lower()
        ]

    def survivor(self, id: int) -> int:
        for _ in range(len(self.users) + 1):
            parent = self.users[id]["merged_into_id"]
            if parent is None:
                return id
            id = parent
        raise AssertionError(f"a cycle of merges through user {id}")

    def exact(self) -> tuple[Any, ...]:
        """Everything a merge and its undo, or a resent message, may not change."""
        return (
            self.users,
            self.identities,
            self.events,
            self.tags,
            self.memberships,
            self.waiting,
        )


class Identities(RuleBasedStateMachine):
    def __init__(self, app: TestClient, database: Database) -> None:
        super().__init__()
        self.app, self.database = app, database
        self.tenant: Tenant = make_tenant(app, database, f"inv-{uuid.uuid4().hex[:12]}")
        self.api = self.tenant.client
        self.ids = itertools.count(1)
        self.sent: list[dict[str, Any]] = []  # accepted payloads, for resending
        self.applied: set[str] = set()  # messageIds applied (not failed)
        self.event_ids: set[str] = set()  # distinct applied track/page messageIds
        self.user_ids: set[str] = set()  # userIds of applied messages
        self.anonymous_ids: set[str] = set()  # anonymousIds (and alias previousIds) applied

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
        if kind == "alias":
            body["previousId"] = spec["previousId"]
            return body
        if kind == "identify":
            body["traits"] = {"plan": spec["plan"]}
            if spec["email"]:
                body["traits"]["email"] = spec["email"]
            if spec["tag"]:
                body["traits"]["tags"] = ["vip"]
        elif kind == "track":
            body["event"] = "Clicked"
        elif kind == "page":
            body["name"] = "Home"
        else:
            body["groupId"] = spec["groupId"]
        if spec["lookup"] and spec["email"]:
            body["integrations"] = {"audience": {"lookup": "email"}}
            if kind == "identify":
                pass  # the traits carry the email
            elif kind == "group":
                body["context"] = {"traits": {"email": spec["email"]}}
            else:
                body["properties"] = {"email": spec["email"]}
        if spec["user_key"] is not None and state.users:
            users = sorted(state.users)
            key = state.users[users[spec["user_key"] % len(users)]]["user_key"]
            body.setdefault("context", {})["externalId"] = [{"type": "userKey", "id": key}]
        return body

    def send(self, bodies: list[dict[str, Any]]) -> list[str]:
        """Posts one batch and processes it; returns what became of each message: "rejected"
        (at accept time), "applied", or the error code it failed with in the processor."""
        before = self.state()
        response = self.app.post(
            "/v1/batch", json={"batch": bodies}, auth=(self.tenant.app_token, "")
        )
        assert response.status_code == 200, response.text
        reply = response.json()
        rejected = {item["index"] for item in reply["rejected"]}
        assert reply["accepted"] == len(bodies) - len(rejected)
        Processor(self.database).drain()
        after = self.state()
        outcomes = []
        for index, body in enumerate(bodies):
            user_id = _effective(body.get("userId"))
            anonymous_id = _effective(body.get("anonymousId"))
            # The accept path's rule: an id must be left; alias also needs its previousId.
            acceptable = (user_id or anonymous_id) is not None and (
                body["type"] != "alias" or _effective(body["previousId"]) is not None
            )
            assert (index not in rejected) == acceptable, (body, reply)
            if index in rejected:
                outcomes.append("rejected")
                continue
            self.sent.append(body)
            message_id = body["messageId"]
            failed = next(
                (
                    code
                    for (mid, code), count in after.failures.items()
                    if mid == message_id and count > before.failures[(mid, code)]
                ),
                None,
            )
            if message_id in self.applied:  # R-ING-7: seen before, no further effect
                assert not failed, body
                outcomes.append("applied")
                continue
            if body["type"] == "alias" and user_id is None:
                assert failed == "missing_user_id", f"{body} must fail: alias needs a userId"
                outcomes.append(failed)
                continue
            if failed:
                assert failed in LOOKUP_FAILURES and "integrations" in body, (failed, body)
                outcomes.append(failed)
                continue
            outcomes.append("applied")
            self.applied.add(message_id)
            if body["type"] in ("track", "page"):
                self.event_ids.add(message_id)
            if user_id:
                self.user_ids.add(user_id)
            if body["type"] != "alias" and anonymous_id:
                self.anonymous_ids.add(anonymous_id)  # (alias leaves its anonymousId alone)
            if body["type"] == "alias" and not body["previousId"].startswith("u"):
                self.anonymous_ids.add(body["previousId"])
        return outcomes

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
        seen = body["messageId"] in self.applied
        (outcome,) = self.send([body])
        after = self.state()
        self.check_ingestion_keeps_user_ids(before, after)
        if outcome == "rejected" or body["type"] == "alias" or seen:
            return
        # R-ID-2: userKey, then email lookup, then userId, then anonymousId; R-ID-5: a message
        # with a userId is that user's, whoever the other keys name.
        externals = body.get("context", {}).get("externalId", [{}])
        keyed = [
            id for id in before.live() if before.users[id]["user_key"] == externals[0].get("id")
        ]
        lookup = "integrations" in body and not keyed
        if lookup:
            matches = before.by_email(spec["email"])
            expected = {0: "lookup_not_found", 1: "applied"}.get(len(matches), "lookup_ambiguous")
            assert outcome == expected, (body, matches)
            if outcome != "applied":
                return
        assert outcome == "applied", body
        user_id = _effective(body.get("userId"))
        if user_id is not None:
            holder = after.by_user_id(user_id)
            owner = None if holder is None else after.survivor(holder)
        elif keyed:
            owner = keyed[0]
        elif lookup:
            owner = before.by_email(spec["email"])[0]
        else:
            owner = after.identities[_effective(body["anonymousId"]) or ""][1]
        assert owner is not None and after.users[owner]["merged_into_id"] is None, body
        if body["type"] in ("track", "page"):
            assert after.events[body["messageId"]][1] == owner, body
        elif body["type"] == "group":
            assert any(c == spec["groupId"] and u == owner for c, u, _ in after.memberships)
        else:
            assert after.users[owner]["custom_attributes"].get("plan") == spec["plan"], body
            if spec["tag"]:
                assert any(name == "vip" and u == owner for name, u, _ in after.tags)

    @rule(batch=st.lists(specs(), min_size=2, max_size=4), twice=st.booleans())
    def send_batch(self, batch: list[dict[str, Any]], twice: bool) -> None:
        """Several messages in one request (one processor batch); maybe one of them twice."""
        before = self.state()
        bodies = [self.payload(spec, before) for spec in batch]
        if twice:
            bodies.append(dict(bodies[0]))
        self.send(bodies)
        self.check_ingestion_keeps_user_ids(before, self.state())

    @rule(anonymous_id=anonymous_ids, user_id=user_ids)
    def visitor_logs_in(self, anonymous_id: str, user_id: str) -> None:
        """A page view as a visitor, then identify on login: R-ID-4's implicit merge when
        someone has that userId already (and the device was anonymous)."""
        before = self.state()
        view = {"kind": "page", "userId": None, "anonymousId": anonymous_id, "user_key": None}
        login = {**view, "kind": "identify", "userId": user_id, "plan": "pro", "email": None}
        for spec in (view, login):
            (outcome,) = self.send([self.payload({**SPEC_DEFAULTS, **spec}, self.state())])
            assert outcome == "applied"
        after = self.state()
        self.check_ingestion_keeps_user_ids(before, after)
        owner = after.survivor(after.by_user_id(user_id) or 0)
        holder = after.identities[anonymous_id][1]
        device = before.identities.get(anonymous_id)
        if device is None or before.users[device[1]]["user_id"] in (None, user_id):
            assert holder == owner  # the visitor is now (part of) the user
        else:  # someone else's device (R-ID-5): it stays theirs
            assert holder == before.survivor(device[1])

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """R-ING-7: a messageId seen before has no further effect (and still gets a 2xx)."""
        body = data.draw(st.sampled_from(self.sent))
        if body["messageId"] not in self.applied:
            return  # a failed one may apply now: that is a replay, not a duplicate
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
    @rule(pick=st.integers(0, 15), any_merge=st.booleans())
    def undo_merge(self, pick: int, any_merge: bool) -> None:
        """A merge that can be undone, or any merge; implicit ones included. 409 exactly when
        the docs say so: undone already, or its survivor merged into someone since."""
        state = self.state()
        merges = [
            merge
            for merge in state.merges
            if any_merge
            or (
                merge.undone_at is None
                and state.users[merge.into_user_id]["merged_into_id"] is None
            )
        ]
        if not merges:
            return
        merge = merges[pick % len(merges)]
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
        assert state.failure_codes <= {"missing_user_id", *LOOKUP_FAILURES}

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

        # R-ING-7: one events row per distinct applied track/page messageId.
        assert state.event_rows == len(self.event_ids)
        assert set(state.events) == self.event_ids

        # Every event is on a live user: the survivor of its original owner (the source of the
        # first merge that moved it, else its owner now). Links follow their users too.
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
        for name, owner, _ in state.tags:
            assert owner in live, f"tag {name} is on merged-away user {owner}"
        for company, owner, _ in state.memberships:
            assert owner in live, f"company {company} has merged-away user {owner}"

        # A page view counts once on whoever holds it: merges add up the counters and move the
        # events, undos take back both, a resent page counts nothing.
        for id in live:
            assert state.users[id]["page_views"] == state.page_events[id], id


def test_identity_invariants_hold_under_random_ingestion_merges_and_undos(
    app: TestClient, database: Database
) -> None:
    run_state_machine_as_test(
        lambda: Identities(app, database),
        settings=settings(
            max_examples=EXAMPLES,
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
