"""/api/v1/mappings: the environment's field mappings for ingestion (R-ING-2)."""

from __future__ import annotations

from fastapi import APIRouter

from audience.auth import CurrentEnvironment, DbSession
from audience.db import TransactionRoute
from audience.mappings import service
from audience.mappings.schemas import MappingsChange, MappingsObject, MappingsWrite

router = APIRouter(prefix="/mappings", tags=["mappings"], route_class=TransactionRoute)


@router.get("", response_model=MappingsObject, summary="Get the field mappings")
def get_mappings(environment: CurrentEnvironment) -> MappingsObject:
    return MappingsObject(**service.get_mappings(environment))


@router.put("", response_model=MappingsObject, summary="Replace all field mappings")
def replace_mappings(
    body: MappingsWrite, environment: CurrentEnvironment, session: DbSession
) -> MappingsObject:
    mappings = body.model_dump()
    saved = service.replace_mappings(session, environment=environment, mappings=mappings)
    return MappingsObject(**saved)


@router.patch("", response_model=MappingsObject, summary="Change some field mappings")
def update_mappings(
    body: MappingsChange, environment: CurrentEnvironment, session: DbSession
) -> MappingsObject:
    changes = body.model_dump(exclude_unset=True)
    mappings = service.update_mappings(session, environment=environment, changes=changes)
    return MappingsObject(**mappings)
