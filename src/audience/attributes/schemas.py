from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from audience.attributes.models import AttributeDefinition
from audience.schemas import Body, unix

Model = Literal["user", "company", "deal", "ticket", "activity"]
Type = Literal["string", "number", "boolean", "date", "datetime", "list"]
Options = Annotated[list[str | int | float], Field(max_length=1000)]


class DefinitionCreate(Body):
    model: Model = "user"
    name: Annotated[str, Field(min_length=1, max_length=255)]
    type: Type
    label: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    options: Options | None = None


class DefinitionUpdate(Body):
    label: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    options: Options | None = None
    archived: bool | None = None


class DefinitionObject(BaseModel):
    type: Literal["data_attribute"] = "data_attribute"
    id: str
    model: str
    name: str
    full_name: str
    label: str
    data_type: str
    options: list[Any] | None
    origin: str
    archived: bool
    created_at: int
    updated_at: int


class DefinitionList(BaseModel):
    type: Literal["data_attribute.list"] = "data_attribute.list"
    total_count: int
    data_attributes: list[DefinitionObject]


def definition_object(definition: AttributeDefinition) -> DefinitionObject:
    return DefinitionObject(
        id=str(definition.id),
        model=definition.model,
        name=definition.name,
        full_name=f"custom_attributes.{definition.name}",
        label=definition.label,
        data_type=definition.type,
        options=definition.options,
        origin=definition.origin,
        archived=definition.archived,
        created_at=unix(definition.created_at) or 0,
        updated_at=unix(definition.updated_at) or 0,
    )
