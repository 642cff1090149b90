"""Concurrent writes through the service, each in its own transaction, as two requests would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audience.companies import service
from audience.companies.models import Company, Membership
from audience.db import Database
from audience.environments.models import Environment
from tests.conftest import Tenant
from tests.factories import create_company, create_user


def overlapping(
    database: Database, first: Callable[[Session], None], second: Callable[[Session], None]
) -> list[BaseException]:
    """Run `first` then, while its transaction is still open, start `second`."""
    started = threading.Event()
    errors: list[BaseException] = []

    def run(work: Callable[[Session], None], signal: bool) -> None:
        try:
            with database.transaction() as session:
                work(session)
                if signal:
                    started.set()
                    time.sleep(0.3)  # hold the transaction open while the other one starts
        except BaseException as error:
            errors.append(error)
            started.set()

    threads = [threading.Thread(target=run, args=(first, True))]
    threads[0].start()
    started.wait(10)
    threads.append(threading.Thread(target=run, args=(second, False)))
    threads[1].start()
    for thread in threads:
        thread.join(60)
    return errors


def test_concurrent_creates_with_one_company_id_make_one_company(
    database: Database, tenant: Tenant
) -> None:
    def save(data: dict[str, object]) -> Callable[[Session], None]:
        def work(session: Session) -> None:
            environment = session.get(Environment, tenant.id)
            assert environment is not None
            service.save_company(session, environment=environment, data=data)

        return work

    errors = overlapping(
        database,
        save({"company_id": "race", "name": "First"}),
        save({"company_id": "race", "plan": "pro"}),
    )
    assert errors == []
    with database.transaction() as session:
        rows = list(session.scalars(select(Company).where(Company.company_id == "race")))
        assert [(row.name, row.plan) for row in rows] == [("First", "pro")]


def adding(tenant: Tenant, company_id: int, user_id: int) -> Callable[[Session], None]:
    """Work that adds user `user_id` to company `company_id`, as the API route does."""

    def work(session: Session) -> None:
        environment = session.get(Environment, tenant.id)
        company = session.get(Company, company_id)
        assert environment is not None and company is not None
        user = service.find_user(session, environment=environment, id=str(user_id))
        service.add_member(session, environment=environment, company=company, user=user)

    return work


def test_concurrent_adds_of_one_member_make_one_membership(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    add = adding(tenant, int(create_company(api)["id"]), int(create_user(api)["id"]))
    assert overlapping(database, add, add) == []
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Membership)) == 1


def test_concurrent_moves_in_single_mode_leave_the_user_in_one_company(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    with database.transaction() as session:
        environment = session.get(Environment, tenant.id)
        assert environment is not None
        environment.settings = {**environment.settings, "company_membership": "single"}
    first, second = (int(create_company(api)["id"]) for _ in range(2))
    user_id = int(create_user(api)["id"])
    moves = adding(tenant, first, user_id), adding(tenant, second, user_id)
    assert overlapping(database, *moves) == []
    with database.transaction() as session:
        rows = session.execute(select(Membership.company_id, Membership.user_id)).all()
        assert [tuple(row) for row in rows] == [(second, user_id)]
