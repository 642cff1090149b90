"""The user object (R-API-2) of many users at once: their relations in one query each.

Shared by the REST API and exports, so an exported user is exactly what GET /users/{id} shows.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from audience.environments.models import Environment
from audience.segments import saved
from audience.users import service
from audience.users.models import User
from audience.users.schemas import CompanyRef, Ref, UserObject, user_object


def render(session: Session, environment: Environment, users: list[User]) -> list[UserObject]:
    ids = [user.id for user in users]
    companies, tags = service.relations(session, user_ids=ids)
    member_of = saved.segments_of(session, user_ids=ids)
    keep = bool(environment.settings.get("keep_tracking_data"))
    return [
        user_object(
            user,
            companies=[
                CompanyRef(type="company", id=str(c.id), company_id=c.company_id, name=c.name)
                for c in companies[user.id]
            ],
            tags=[Ref(type="tag", id=str(t.id), name=t.name) for t in tags[user.id]],
            segments=[Ref(type="segment", id=str(s.id), name=s.name) for s in member_of[user.id]],
            keep_tracking_data=keep,
        )
        for user in users
    ]
