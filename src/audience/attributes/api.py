"""/api/v1/data_attributes: the definitions (type, label, options) of custom attributes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from audience.attributes import service
from audience.attributes.schemas import (
    DefinitionCreate,
    DefinitionList,
    DefinitionObject,
    DefinitionUpdate,
    Model,
    definition_object,
)
from audience.auth import CurrentEnvironment, DbSession
from audience.db import TransactionRoute
from audience.schemas import Deleted, parse_id

router = APIRouter(prefix="/data_attributes", tags=["attributes"], route_class=TransactionRoute)


@router.post("", response_model=DefinitionObject, summary="Define a custom attribute")
def create_definition(
    body: DefinitionCreate, environment: CurrentEnvironment, session: DbSession
) -> DefinitionObject:
    definition = service.create_definition(
        session,
        environment_id=environment.id,
        model=body.model,
        name=body.name,
        type=body.type,
        label=body.label,
        options=body.options,
    )
    return definition_object(definition)


@router.get("", response_model=DefinitionList, summary="List attribute definitions")
def list_definitions(
    environment: CurrentEnvironment,
    session: DbSession,
    model: Model | None = None,
    archived: Annotated[
        bool | None, Query(description="Only archived (true) or live (false).")
    ] = None,
) -> DefinitionList:
    definitions = service.list_definitions(
        session, environment_id=environment.id, model=model, archived=archived
    )
    items = [definition_object(definition) for definition in definitions]
    return DefinitionList(total_count=len(items), data_attributes=items)


@router.get("/{id}", response_model=DefinitionObject, summary="Get an attribute definition")
def get_definition(
    id: str, environment: CurrentEnvironment, session: DbSession
) -> DefinitionObject:
    definition = service.get_definition(
        session, environment_id=environment.id, id=parse_id(id, "attribute definition")
    )
    return definition_object(definition)


@router.patch("/{id}", response_model=DefinitionObject, summary="Relabel, set options, archive")
def update_definition(
    id: str, body: DefinitionUpdate, environment: CurrentEnvironment, session: DbSession
) -> DefinitionObject:
    definition = service.update_definition(
        session,
        environment_id=environment.id,
        id=parse_id(id, "attribute definition"),
        changes=body.model_dump(exclude_unset=True),
    )
    return definition_object(definition)


@router.delete("/{id}", response_model=Deleted, summary="Delete a definition (values stay)")
def delete_definition(id: str, environment: CurrentEnvironment, session: DbSession) -> Deleted:
    service.delete_definition(
        session, environment_id=environment.id, id=parse_id(id, "attribute definition")
    )
    return Deleted(id=id, object="data_attribute")
