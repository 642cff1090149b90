"""/api/v1/companies: create-or-update, read, update, delete, look up, list, and members.

The user-side membership routes (/api/v1/users/{id}/companies) live here too: they are company
membership, and this router has no prefix so it can hold both.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from audience.auth import CurrentEnvironment, DbSession
from audience.companies import service
from audience.companies.models import Company
from audience.companies.schemas import (
    CompanyCreate,
    CompanyList,
    CompanyObject,
    CompanyUpdate,
    TagRef,
    company_object,
)
from audience.db import TransactionRoute
from audience.pagination import Page, Pagination
from audience.refs import CompanyRefIn, UserRefIn
from audience.schemas import Deleted, parse_id
from audience.users import service as users
from audience.users.api import render_one as render_user
from audience.users.api import user_list
from audience.users.schemas import UserList, UserObject

router = APIRouter(tags=["companies"], route_class=TransactionRoute)

CompanyIdQuery = Annotated[
    str, Query(min_length=1, max_length=255, description="Your id for the company.")
]
Sort = Annotated[str, Query(max_length=64, description="A standard attribute.")]
MemberUserId = Annotated[str, Path(description="The user's `id` (not your `user_id`).")]
MemberCompanyId = Annotated[str, Path(description="The company's `id` (not your `company_id`).")]


def render(session: Session, environment_id: int, companies: list[Company]) -> list[CompanyObject]:
    counts, tags = service.relations(
        session, environment_id=environment_id, company_ids=[company.id for company in companies]
    )
    return [
        company_object(
            company,
            user_count=counts[company.id],
            tags=[TagRef(id=str(tag.id), name=tag.name) for tag in tags[company.id]],
        )
        for company in companies
    ]


def render_one(session: Session, environment_id: int, company: Company) -> CompanyObject:
    return render(session, environment_id, [company])[0]


def _company(session: Session, environment_id: int, id: str) -> Company:
    """The company a path `id` names, else 404."""
    return service.get_company(session, environment_id=environment_id, id=parse_id(id, "company"))


def company_list(session: Session, environment_id: int, page: Page) -> CompanyList:
    companies = render(session, environment_id, list(page.items))
    return CompanyList(total_count=page.total, companies=companies, pages=page.pages())


@router.post(
    "/companies",
    response_model=CompanyObject,
    summary="Create a company, or update it when its company_id exists",
    description="Intercom's create-or-update: the body's `company_id` names the company. When "
    "no company of this environment has it, one is created; otherwise that company is updated "
    "with the given fields (omitted fields are left alone, `null` removes a value).",
)
def save_company(
    body: CompanyCreate, environment: CurrentEnvironment, session: DbSession
) -> CompanyObject:
    data = body.model_dump(exclude_unset=True)
    company = service.save_company(session, environment=environment, data=data)
    return render_one(session, environment.id, company)


@router.get("/companies", response_model=CompanyList, summary="List and search companies")
def list_companies(
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    q: Annotated[str | None, Query(max_length=255, description="Search name, company_id.")] = None,
    sort: Sort = "created_at",
    order: Literal["asc", "desc"] = "desc",
) -> CompanyList:
    page = service.list_companies(
        session,
        environment_id=environment.id,
        q=q,
        sort=sort,
        descending=order == "desc",
        params=pagination,
    )
    return company_list(session, environment.id, page)


@router.get(
    "/companies/lookup", response_model=CompanyObject, summary="Get a company by company_id"
)
def lookup_company(
    company_id: CompanyIdQuery, environment: CurrentEnvironment, session: DbSession
) -> CompanyObject:
    company = service.lookup_company(session, environment_id=environment.id, company_id=company_id)
    return render_one(session, environment.id, company)


@router.patch(
    "/companies/lookup", response_model=CompanyObject, summary="Update a company by company_id"
)
def update_company_by_company_id(
    company_id: CompanyIdQuery,
    body: CompanyUpdate,
    environment: CurrentEnvironment,
    session: DbSession,
) -> CompanyObject:
    company = service.lookup_company(session, environment_id=environment.id, company_id=company_id)
    service.update_company(
        session, environment=environment, company=company, data=body.model_dump(exclude_unset=True)
    )
    return render_one(session, environment.id, company)


@router.delete(
    "/companies/lookup", response_model=Deleted, summary="Delete a company by company_id"
)
def delete_company_by_company_id(
    company_id: CompanyIdQuery, environment: CurrentEnvironment, session: DbSession
) -> Deleted:
    company = service.lookup_company(session, environment_id=environment.id, company_id=company_id)
    service.delete_company(session, environment_id=environment.id, id=company.id)
    return Deleted(id=str(company.id), object="company")


@router.get("/companies/{id}", response_model=CompanyObject, summary="Get a company")
def get_company(id: str, environment: CurrentEnvironment, session: DbSession) -> CompanyObject:
    company = _company(session, environment.id, id)
    return render_one(session, environment.id, company)


@router.patch("/companies/{id}", response_model=CompanyObject, summary="Update some of a company")
@router.put("/companies/{id}", response_model=CompanyObject, include_in_schema=False)
def update_company(
    id: str, body: CompanyUpdate, environment: CurrentEnvironment, session: DbSession
) -> CompanyObject:
    company = _company(session, environment.id, id)
    service.update_company(
        session, environment=environment, company=company, data=body.model_dump(exclude_unset=True)
    )
    return render_one(session, environment.id, company)


@router.delete("/companies/{id}", response_model=Deleted, summary="Delete a company")
def delete_company(id: str, environment: CurrentEnvironment, session: DbSession) -> Deleted:
    company_id = parse_id(id, "company")
    service.delete_company(session, environment_id=environment.id, id=company_id)
    return Deleted(id=str(company_id), object="company")


@router.get("/companies/{id}/users", response_model=UserList, summary="List a company's users")
def list_members(
    id: str,
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    sort: Sort = "created_at",
    order: Literal["asc", "desc"] = "desc",
) -> UserList:
    page = service.list_members(
        session,
        environment_id=environment.id,
        company_id=parse_id(id, "company"),
        sort=sort,
        descending=order == "desc",
        params=pagination,
    )
    return user_list(session, environment, page)


@router.post(
    "/companies/{id}/users",
    response_model=CompanyObject,
    summary="Add a user to a company (by id, user_id or email); returns the company",
)
def add_member(
    id: str, body: UserRefIn, environment: CurrentEnvironment, session: DbSession
) -> CompanyObject:
    company = _company(session, environment.id, id)
    user = service.find_user(
        session, environment=environment, id=body.id, user_id=body.user_id, email=body.email
    )
    service.add_member(session, environment=environment, company=company, user=user)
    return render_one(session, environment.id, company)


@router.delete(
    "/companies/{id}/users/{user_id}",
    response_model=CompanyObject,
    summary="Remove a user from a company; returns the company",
)
def remove_member(
    id: str, user_id: MemberUserId, environment: CurrentEnvironment, session: DbSession
) -> CompanyObject:
    company = _company(session, environment.id, id)
    user = users.get_user(session, environment_id=environment.id, id=parse_id(user_id, "user"))
    service.remove_member(session, environment_id=environment.id, company=company, user=user)
    return render_one(session, environment.id, company)


@router.get(
    "/users/{id}/companies", response_model=CompanyList, summary="List the companies of a user"
)
def list_user_companies(
    id: str, environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> CompanyList:
    page = service.list_user_companies(
        session, environment_id=environment.id, user_id=parse_id(id, "user"), params=pagination
    )
    return company_list(session, environment.id, page)


@router.post(
    "/users/{id}/companies",
    response_model=UserObject,
    summary="Add a user to a company (by id or company_id); returns the user",
)
def join_company(
    id: str, body: CompanyRefIn, environment: CurrentEnvironment, session: DbSession
) -> UserObject:
    user = users.get_user(session, environment_id=environment.id, id=parse_id(id, "user"))
    company = service.find_company(
        session, environment_id=environment.id, id=body.id, company_id=body.company_id
    )
    service.add_member(session, environment=environment, company=company, user=user)
    return render_user(session, environment, user)


@router.delete(
    "/users/{id}/companies/{company_id}",
    response_model=UserObject,
    summary="Remove a user from a company; returns the user",
)
def leave_company(
    id: str, company_id: MemberCompanyId, environment: CurrentEnvironment, session: DbSession
) -> UserObject:
    user = users.get_user(session, environment_id=environment.id, id=parse_id(id, "user"))
    company = _company(session, environment.id, company_id)
    service.remove_member(session, environment_id=environment.id, company=company, user=user)
    return render_user(session, environment, user)
