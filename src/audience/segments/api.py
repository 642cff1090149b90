"""POST /api/v1/users/search: users matching a filter tree (R-API-4, R-SEG-1)."""

from __future__ import annotations

from fastapi import APIRouter

from audience.auth import CurrentEnvironment, DbSession
from audience.db import ReadRoute
from audience.pagination import PageParams
from audience.segments import service
from audience.segments.schemas import UserSearchIn
from audience.users.api import user_list
from audience.users.schemas import UserList

router = APIRouter(tags=["users"], route_class=ReadRoute)


@router.post("/users/search", response_model=UserList, summary="Search users by filter")
def search_users(
    body: UserSearchIn, environment: CurrentEnvironment, session: DbSession
) -> UserList:
    page = service.search_users(
        session,
        environment_id=environment.id,
        filter=body.filter,
        q=body.q,
        sort=body.sort,
        descending=body.order == "desc",
        params=PageParams(body.page, body.per_page, body.starting_after),
    )
    return user_list(session, environment, page)
