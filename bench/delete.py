"""Bulk delete rate: users deleted per second by the `delete` bulk job, through the job runner.

    .venv/bin/python bench/delete.py [--database sqlite,postgresql] [--users 20000]
        [--events-per-user 2] [--hook]

Per database: a fresh migrated database with `--users` users, one user merged into every tenth
(with a merge-log row), `--events-per-user` events for each, a tag, a list membership, an
identity and a history row per user (inserted straight, not timed). Then `POST /users/bulk`
`delete` over every user and `JobRunner.drain()`, timed, and the rows left checked. `--hook`
subscribes a webhook to `user.deleted` first (one delivery queued per deleted user).
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, insert, make_url, select, text

from audience.app import create_app
from audience.config import Settings
from audience.db import Database, utcnow
from audience.environments import service as environments
from audience.events.models import Event
from audience.jobs.runner import JobRunner
from audience.lists.models import ListMember, UserList
from audience.migrations import upgrade
from audience.tags.models import Tag, UserTag
from audience.users.models import AttributeChange, Identity, Merge, User
from audience.webhooks.models import WebhookDelivery, WebhookSubscription


def load(database: Database, users: int, events_per_user: int, hook: bool) -> str:
    """Fill the database; returns an API key of its environment."""
    now = utcnow()
    with database.transaction() as session:
        environment = environments.create_environment(session, name="Bench", slug="bench")
        _, key = environments.create_api_key(session, environment_id=environment.id)
        env = environment.id
        tag, members = Tag(environment_id=env, name="t"), UserList(environment_id=env, name="l")
        session.add_all([tag, members])
        if hook:
            url, topics = "http://example.com/hook", ["user.deleted"]
            session.add(WebhookSubscription(environment_id=env, url=url, topics=topics, secret="s"))
        session.flush()

        def user(index: int, **fields: Any) -> dict[str, Any]:
            return {
                "environment_id": env,
                "user_key": f"k{index:011d}",
                "user_id": f"u{index}",
                "email": f"p{index}@example.com",
                "custom_attributes": {"plan": "pro", "n": index},
                "created_at": now,
                "updated_at": now,
                **fields,
            }

        for start in range(0, users, 1000):
            indexes = range(start, min(users, start + 1000))
            ids = session.scalars(insert(User).returning(User.id), [user(i) for i in indexes]).all()
            survivors = ids[::10]
            merged = session.scalars(
                insert(User).returning(User.id),
                [user(10 * users + id, user_id=None, merged_into_id=id) for id in survivors],
            ).all()
            session.execute(
                insert(Merge),
                [
                    {"environment_id": env, "from_user_id": source, "into_user_id": into}
                    | {"reason": "api", "moved": {}, "created_at": now}
                    for source, into in zip(merged, survivors, strict=True)
                ],
            )
            events = [
                {"environment_id": env, "user_id": id, "name": f"e{n}", "timestamp": now}
                | {"message_id": f"{id}-{n}"}
                for id in [*ids, *merged]
                for n in range(events_per_user)
            ]
            if events:
                session.execute(insert(Event), events)
            session.execute(insert(UserTag), [{"tag_id": tag.id, "user_id": id} for id in ids])
            session.execute(
                insert(ListMember), [{"list_id": members.id, "user_id": id} for id in ids]
            )
            session.execute(
                insert(Identity),
                [
                    {
                        "environment_id": env,
                        "user_id": id,
                        "kind": "anonymous_id",
                        "value": f"a{id}",
                    }
                    for id in ids
                ],
            )
            session.execute(
                insert(AttributeChange),
                [
                    {"environment_id": env, "user_id": id, "attribute": "plan", "source": "api"}
                    for id in ids
                ],
            )
    if database.engine.dialect.name == "postgresql":
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))
    return key


def run_one(kind: str, args: argparse.Namespace) -> str:
    directory = Path(tempfile.mkdtemp())
    admin, name = None, f"bench_delete_{secrets.token_hex(4)}"
    if kind == "sqlite":
        settings = Settings(data_dir=directory)
    else:
        server = make_url(args.postgres_url).set(drivername="postgresql+psycopg")
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = server.set(database=name).render_as_string(False)
        settings = Settings(data_dir=directory, database_url=url)
    database = Database(settings)
    try:
        upgrade(database.engine)
        key = load(database, args.users, args.events_per_user, args.hook)
        api = TestClient(
            create_app(settings, database=database), headers={"Authorization": f"Bearer {key}"}
        )
        body = {"operation": "delete", "filter": {"and": []}}
        response = api.post("/api/v1/users/bulk", json=body)
        assert response.status_code == 202, response.text
        started = time.perf_counter()
        JobRunner(database).drain()
        seconds = time.perf_counter() - started
        job = api.get(f"/api/v1/jobs/{response.json()['id']}").json()
        with database.transaction() as session:
            left = {
                model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (User, Event, Merge, WebhookDelivery)
            }
        return (
            f"{kind:<10} {args.users:,} users, {args.events_per_user} events each"
            f"{', user.deleted webhook' if args.hook else ''}: job {job['status']}, "
            f"{job['done']:,} done, {job['failed']} failed in {seconds:.1f} s = "
            f"{args.users / seconds:,.0f} users/s; rows left {left}"
        )
    finally:
        database.dispose()
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="sqlite,postgresql")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events-per-user", type=int, default=2)
    parser.add_argument("--hook", action="store_true")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    for kind in args.database.split(","):
        print(run_one(kind, args), flush=True)


if __name__ == "__main__":
    main()
