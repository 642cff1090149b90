"""Helpers of the tags tests: plain functions over the REST client and the database."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.companies.models import Company
from audience.db import Database
from audience.tags.models import CompanyTag, UserTag
from tests.conftest import Tenant
from tests.factories import unique


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list"
    return dict(body["errors"][0])


def create_tag(api: TestClient, name: str | None = None) -> dict[str, Any]:
    response = api.post("/api/v1/tags", json={"name": name or unique("tag")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def create_company(database: Database, tenant: Tenant, **fields: Any) -> dict[str, str]:
    """A company row (its REST API belongs to another domain): {"id", "company_id"}."""
    company_id = fields.pop("company_id", unique("company"))
    with database.transaction() as session:
        company = Company(environment_id=tenant.id, company_id=company_id, name="Acme", **fields)
        session.add(company)
        session.flush()
        return {"id": str(company.id), "company_id": company_id}


def tagged_user_ids(database: Database, tag_id: str) -> set[int]:
    with database.transaction() as session:
        return set(session.scalars(select(UserTag.user_id).where(UserTag.tag_id == int(tag_id))))


def tagged_company_ids(database: Database, tag_id: str) -> set[int]:
    with database.transaction() as session:
        rows = session.scalars(
            select(CompanyTag.company_id).where(CompanyTag.tag_id == int(tag_id))
        )
        return set(rows)


def tag_users(api: TestClient, tag_id: str, *refs: dict[str, str]) -> Any:
    return api.post(f"/api/v1/tags/{tag_id}/users", json={"users": list(refs)})
