"""/api/v1/lists and the user-side shortcuts /api/v1/users/{id}/lists."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from audience.auth import CurrentEnvironment, DbSession
from audience.db import TransactionRoute
from audience.lists import service
from audience.lists.models import UserList
from audience.lists.schemas import (
    ListCreate,
    ListList,
    ListObject,
    ListUpdate,
    ListUsersIn,
    UserListIn,
    list_object,
)
from audience.pagination import Page, Pagination
from audience.schemas import Deleted, parse_id
from audience.users import schemas as users
from audience.users.api import user_list

router = APIRouter(tags=["lists"], route_class=TransactionRoute)


def render(session: Session, lists: list[UserList]) -> list[ListObject]:
    counts = service.counts(session, list_ids=[item.id for item in lists])
    return [list_object(item, user_count=counts[item.id]) for item in lists]


def render_one(session: Session, item: UserList) -> ListObject:
    return render(session, [item])[0]


def list_list(session: Session, page: Page) -> ListList:
    lists = render(session, list(page.items))
    return ListList(total_count=page.total, lists=lists, pages=page.pages())


@router.post(
    "/lists", response_model=ListObject, summary="Create a list (409 when the name is taken)"
)
def create_list(
    body: ListCreate, environment: CurrentEnvironment, session: DbSession
) -> ListObject:
    item = service.create_list(
        session, environment_id=environment.id, name=body.name, description=body.description
    )
    return render_one(session, item)


@router.get("/lists", response_model=ListList, summary="List lists by name")
def list_lists(
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    q: Annotated[str | None, Query(max_length=255, description="Name prefix.")] = None,
) -> ListList:
    page = service.list_lists(session, environment_id=environment.id, q=q, params=pagination)
    return list_list(session, page)


@router.get("/lists/{id}", response_model=ListObject, summary="Get a list")
def get_list(id: str, environment: CurrentEnvironment, session: DbSession) -> ListObject:
    item = service.get_list(session, environment_id=environment.id, id=parse_id(id, "list"))
    return render_one(session, item)


@router.patch("/lists/{id}", response_model=ListObject, summary="Rename or describe a list")
def update_list(
    id: str, body: ListUpdate, environment: CurrentEnvironment, session: DbSession
) -> ListObject:
    item = service.update_list(
        session,
        environment_id=environment.id,
        id=parse_id(id, "list"),
        data=body.model_dump(exclude_unset=True),
    )
    return render_one(session, item)


@router.delete("/lists/{id}", response_model=Deleted, summary="Delete a list (its users stay)")
def delete_list(id: str, environment: CurrentEnvironment, session: DbSession) -> Deleted:
    service.delete_list(session, environment_id=environment.id, id=parse_id(id, "list"))
    return Deleted(id=id, object="list")


@router.post("/lists/{id}/users", response_model=ListObject, summary="Add users (up to 1000)")
def add_users(
    id: str, body: ListUsersIn, environment: CurrentEnvironment, session: DbSession
) -> ListObject:
    item = service.add_users(
        session, environment_id=environment.id, id=parse_id(id, "list"), refs=body.users
    )
    return render_one(session, item)


@router.delete("/lists/{id}/users/{user_id}", response_model=ListObject, summary="Remove a user")
def remove_user(
    id: str, user_id: str, environment: CurrentEnvironment, session: DbSession
) -> ListObject:
    item = service.remove_user(
        session,
        environment_id=environment.id,
        id=parse_id(id, "list"),
        user_id=parse_id(user_id, "user"),
    )
    return render_one(session, item)


@router.get("/lists/{id}/users", response_model=users.UserList, summary="Users on a list")
def list_members(
    id: str, environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> users.UserList:
    page = service.members(
        session, environment_id=environment.id, id=parse_id(id, "list"), params=pagination
    )
    return user_list(session, environment, page)


@router.get("/users/{id}/lists", response_model=ListList, summary="Lists a user is on")
def user_lists(
    id: str, environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> ListList:
    page = service.user_lists(
        session, environment_id=environment.id, user_id=parse_id(id, "user"), params=pagination
    )
    return list_list(session, page)


@router.post("/users/{id}/lists", response_model=ListObject, summary="Add a user to a list")
def add_user(
    id: str, body: UserListIn, environment: CurrentEnvironment, session: DbSession
) -> ListObject:
    item = service.add_user(
        session,
        environment_id=environment.id,
        user_id=parse_id(id, "user"),
        id=parse_id(body.id, "list"),
    )
    return render_one(session, item)


@router.delete("/users/{id}/lists/{list_id}", response_model=ListObject, summary="Remove from list")
def remove_user_shortcut(
    id: str, list_id: str, environment: CurrentEnvironment, session: DbSession
) -> ListObject:
    item = service.remove_user(
        session,
        environment_id=environment.id,
        id=parse_id(list_id, "list"),
        user_id=parse_id(id, "user"),
    )
    return render_one(session, item)
