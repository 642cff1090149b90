"""/api/v1/users: create, read, update, delete, look up, list and attribute history."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session

from audience.auth import CurrentEnvironment, DbSession
from audience.db import TransactionRoute
from audience.environments.models import Environment
from audience.errors import AudienceError, NotFound
from audience.pagination import Page, Pagination
from audience.schemas import Deleted, parse_id, unix
from audience.segments import membership
from audience.segments import service as segments
from audience.users import service
from audience.users.delete import delete_users
from audience.users.models import User
from audience.users.render import render
from audience.users.schemas import (
    AttributeChangeList,
    AttributeChangeObject,
    UserList,
    UserObject,
    UserWrite,
)

router = APIRouter(prefix="/users", tags=["users"], route_class=TransactionRoute)


def source(request: Request) -> service.ChangeSource:
    return service.ChangeSource("api", getattr(request.state, "actor", None))


def render_one(session: Session, environment: Environment, user: User) -> UserObject:
    return render(session, environment, [user])[0]


def user_list(session: Session, environment: Environment, page: Page) -> UserList:
    users = render(session, environment, list(page.items))
    return UserList(total_count=page.total, users=users, pages=page.pages())


@router.post("", response_model=UserObject, summary="Create a user")
def create_user(
    body: UserWrite, request: Request, environment: CurrentEnvironment, session: DbSession
) -> UserObject:
    data = body.model_dump(exclude_unset=True)
    user = service.create_user(session, environment=environment, data=data, source=source(request))
    membership.refresh_users(session, environment_id=environment.id, user_ids=[user.id])
    return render_one(session, environment, user)


@router.get("", response_model=UserList, summary="List and search users")
def list_users(
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    q: Annotated[str | None, Query(max_length=255, description="Free-text search.")] = None,
    sort: Annotated[
        str,
        Query(max_length=300, description="A standard attribute or custom_attributes.<name>."),
    ] = "created_at",
    order: Literal["asc", "desc"] = "desc",
    filter: Annotated[
        str | None,
        Query(
            max_length=segments.MAX_FILTER_PARAMETER,
            description="A filter tree as JSON (docs/filters.md); POST /users/search takes it "
            "in a body.",
        ),
    ] = None,
) -> UserList:
    page = segments.search_users(
        session,
        environment_id=environment.id,
        filter=None if filter is None else segments.parse_parameter(filter),
        q=q,
        sort=sort,
        descending=order == "desc",
        params=pagination,
    )
    return user_list(session, environment, page)


@router.get("/lookup", response_model=UserObject, summary="Find the one user a key points to")
def lookup_user(
    environment: CurrentEnvironment,
    session: DbSession,
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    email: Annotated[str | None, Query(max_length=255)] = None,
    phone: Annotated[str | None, Query(max_length=64)] = None,
    user_key: Annotated[str | None, Query(max_length=64)] = None,
    anonymous_id: Annotated[str | None, Query(max_length=255)] = None,
) -> UserObject:
    given = {
        key: value
        for key, value in {
            "user_id": user_id,
            "email": email,
            "phone": phone,
            "user_key": user_key,
            "anonymous_id": anonymous_id,
        }.items()
        if value is not None
    }
    if len(given) != 1:
        raise AudienceError(
            "parameter_invalid",
            "give exactly one of user_id, email, phone, user_key, anonymous_id",
        )
    ((key, value),) = given.items()
    user = service.lookup_user(session, environment=environment, key=key, value=value)
    return render_one(session, environment, user)


@router.get("/{id}", response_model=UserObject, summary="Get a user")
def get_user(id: str, environment: CurrentEnvironment, session: DbSession) -> UserObject:
    user = service.get_user(session, environment_id=environment.id, id=parse_id(id, "user"))
    return render_one(session, environment, user)


@router.patch("/{id}", response_model=UserObject, summary="Update some of a user's fields")
@router.put("/{id}", response_model=UserObject, include_in_schema=False)
def update_user(
    id: str,
    body: UserWrite,
    request: Request,
    environment: CurrentEnvironment,
    session: DbSession,
) -> UserObject:
    user = service.get_user(session, environment_id=environment.id, id=parse_id(id, "user"))
    service.update_user(
        session,
        environment=environment,
        user=user,
        data=body.model_dump(exclude_unset=True),
        source=source(request),
    )
    membership.refresh_users(session, environment_id=environment.id, user_ids=[user.id])
    return render_one(session, environment, user)


@router.delete("/{id}", response_model=Deleted, summary="Delete a user and everything held on them")
def delete_user(id: str, environment: CurrentEnvironment, session: DbSession) -> Deleted:
    user_id = parse_id(id, "user")
    if not delete_users(session, environment_id=environment.id, ids=[user_id]):
        raise NotFound("user", user_id)  # unknown, or merged away (hidden like everywhere)
    return Deleted(id=id, object="user")


@router.get("/{id}/history", response_model=AttributeChangeList, summary="Attribute history")
def user_history(
    id: str, environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> AttributeChangeList:
    page = service.history(
        session, environment_id=environment.id, user_id=parse_id(id, "user"), params=pagination
    )
    changes = [
        AttributeChangeObject(
            id=str(change.id),
            attribute=change.attribute,
            old_value=change.old_value,
            new_value=change.new_value,
            source=change.source,
            source_ref=change.source_ref,
            changed_at=unix(change.changed_at) or 0,
        )
        for change in page.items
    ]
    return AttributeChangeList(total_count=page.total, changes=changes, pages=page.pages())
