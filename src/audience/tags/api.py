"""/api/v1/tags and the user-side shortcuts /api/v1/users/{id}/tags."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from audience.auth import CurrentEnvironment, DbSession
from audience.companies.api import company_list
from audience.companies.schemas import CompanyList
from audience.db import TransactionRoute
from audience.pagination import Page, Pagination
from audience.schemas import Deleted, parse_id
from audience.tags import service
from audience.tags.models import Tag
from audience.tags.schemas import (
    TagCompaniesIn,
    TagList,
    TagObject,
    TagUsersIn,
    TagWrite,
    UserTagIn,
    tag_object,
)
from audience.users.api import user_list
from audience.users.schemas import UserList

router = APIRouter(tags=["tags"], route_class=TransactionRoute)


def render(session: Session, tags: list[Tag]) -> list[TagObject]:
    counts = service.counts(session, tag_ids=[tag.id for tag in tags])
    return [
        tag_object(tag, user_count=counts[tag.id][0], company_count=counts[tag.id][1])
        for tag in tags
    ]


def render_one(session: Session, tag: Tag) -> TagObject:
    return render(session, [tag])[0]


def tag_list(session: Session, page: Page) -> TagList:
    return TagList(
        total_count=page.total, tags=render(session, list(page.items)), pages=page.pages()
    )


@router.post("/tags", response_model=TagObject, summary="Create a tag (409 when the name is taken)")
def create_tag(body: TagWrite, environment: CurrentEnvironment, session: DbSession) -> TagObject:
    tag = service.create_tag(session, environment_id=environment.id, name=body.name)
    return render_one(session, tag)


@router.get("/tags", response_model=TagList, summary="List tags by name")
def list_tags(
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    q: Annotated[str | None, Query(max_length=255, description="Name prefix.")] = None,
) -> TagList:
    page = service.list_tags(session, environment_id=environment.id, q=q, params=pagination)
    return tag_list(session, page)


@router.get("/tags/{id}", response_model=TagObject, summary="Get a tag")
def get_tag(id: str, environment: CurrentEnvironment, session: DbSession) -> TagObject:
    tag = service.get_tag(session, environment_id=environment.id, id=parse_id(id, "tag"))
    return render_one(session, tag)


@router.patch("/tags/{id}", response_model=TagObject, summary="Rename a tag")
def rename_tag(
    id: str, body: TagWrite, environment: CurrentEnvironment, session: DbSession
) -> TagObject:
    tag = service.rename_tag(
        session, environment_id=environment.id, id=parse_id(id, "tag"), name=body.name
    )
    return render_one(session, tag)


@router.delete("/tags/{id}", response_model=Deleted, summary="Delete a tag and all its links")
def delete_tag(id: str, environment: CurrentEnvironment, session: DbSession) -> Deleted:
    service.delete_tag(session, environment_id=environment.id, id=parse_id(id, "tag"))
    return Deleted(id=id, object="tag")


@router.post("/tags/{id}/users", response_model=TagObject, summary="Tag users (up to 1000)")
def tag_users(
    id: str, body: TagUsersIn, environment: CurrentEnvironment, session: DbSession
) -> TagObject:
    tag = service.tag_users(
        session, environment_id=environment.id, id=parse_id(id, "tag"), refs=body.users
    )
    return render_one(session, tag)


@router.delete("/tags/{id}/users/{user_id}", response_model=TagObject, summary="Untag a user")
def untag_user(
    id: str, user_id: str, environment: CurrentEnvironment, session: DbSession
) -> TagObject:
    tag = service.untag_user(
        session,
        environment_id=environment.id,
        id=parse_id(id, "tag"),
        user_id=parse_id(user_id, "user"),
    )
    return render_one(session, tag)


@router.get("/tags/{id}/users", response_model=UserList, summary="Users with a tag")
def tagged_users(
    id: str, environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> UserList:
    page = service.tagged_users(
        session, environment_id=environment.id, id=parse_id(id, "tag"), params=pagination
    )
    return user_list(session, environment, page)


@router.post("/tags/{id}/companies", response_model=TagObject, summary="Tag companies (≤1000)")
def tag_companies(
    id: str, body: TagCompaniesIn, environment: CurrentEnvironment, session: DbSession
) -> TagObject:
    tag = service.tag_companies(
        session, environment_id=environment.id, id=parse_id(id, "tag"), refs=body.companies
    )
    return render_one(session, tag)


@router.delete(
    "/tags/{id}/companies/{company_id}", response_model=TagObject, summary="Untag a company"
)
def untag_company(
    id: str, company_id: str, environment: CurrentEnvironment, session: DbSession
) -> TagObject:
    tag = service.untag_company(
        session,
        environment_id=environment.id,
        id=parse_id(id, "tag"),
        company_id=parse_id(company_id, "company"),
    )
    return render_one(session, tag)


@router.get("/tags/{id}/companies", response_model=CompanyList, summary="Companies with a tag")
def tagged_companies(
    id: str, environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> CompanyList:
    page = service.tagged_companies(
        session, environment_id=environment.id, id=parse_id(id, "tag"), params=pagination
    )
    return company_list(session, environment.id, page)


@router.get("/users/{id}/tags", response_model=TagList, summary="Tags of a user")
def user_tags(
    id: str, environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> TagList:
    page = service.user_tags(
        session, environment_id=environment.id, user_id=parse_id(id, "user"), params=pagination
    )
    return tag_list(session, page)


@router.post("/users/{id}/tags", response_model=TagObject, summary="Tag a user by tag id or name")
def tag_user(
    id: str, body: UserTagIn, environment: CurrentEnvironment, session: DbSession
) -> TagObject:
    tag = service.tag_user(
        session,
        environment_id=environment.id,
        user_id=parse_id(id, "user"),
        tag_id=None if body.id is None else parse_id(body.id, "tag"),
        name=body.name,
    )
    return render_one(session, tag)


@router.delete("/users/{id}/tags/{tag_id}", response_model=TagObject, summary="Untag a user")
def untag_user_shortcut(
    id: str, tag_id: str, environment: CurrentEnvironment, session: DbSession
) -> TagObject:
    tag = service.untag_user(
        session,
        environment_id=environment.id,
        id=parse_id(tag_id, "tag"),
        user_id=parse_id(id, "user"),
    )
    return render_one(session, tag)
