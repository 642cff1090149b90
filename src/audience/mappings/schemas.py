"""Per-environment field mappings (R-ING-2, seed 001 "connection settings") and their bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from audience.schemas import Body

MAX_ENTRIES = 500  # per section: the settings are read with the environment on every batch


def _storable(value: str) -> str:
    # Valid JSON, but neither database can store NUL or a lone surrogate.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_storable)]
Section = Annotated[dict[Name, Name], Field(max_length=MAX_ENTRIES)]
SectionChanges = Annotated[dict[Name, Name | None], Field(max_length=MAX_ENTRIES)]

_TRAITS = "Identify and context traits -> user attribute (standard or custom)."
_EVENT_NAMES = "Event name -> event name; several names may map to one."
_EVENT_PROPERTIES = "Event property -> property, one to one."
_COMPANY_TRAITS = "Group trait -> company attribute (standard or custom)."


class MappingsWrite(Body):
    """PUT: the whole mapping; a section left out is emptied."""

    traits: Section = Field(default_factory=dict, description=_TRAITS)
    event_names: Section = Field(default_factory=dict, description=_EVENT_NAMES)
    event_properties: Section = Field(default_factory=dict, description=_EVENT_PROPERTIES)
    company_traits: Section = Field(default_factory=dict, description=_COMPANY_TRAITS)


class MappingsChange(Body):
    """PATCH: keys merged into each given section; `null` for a key removes it, for a section
    empties it. Sections left out are unchanged."""

    traits: SectionChanges | None = Field(None, description=_TRAITS)
    event_names: SectionChanges | None = Field(None, description=_EVENT_NAMES)
    event_properties: SectionChanges | None = Field(None, description=_EVENT_PROPERTIES)
    company_traits: SectionChanges | None = Field(None, description=_COMPANY_TRAITS)


class MappingsObject(BaseModel):
    type: Literal["mappings"] = "mappings"
    traits: dict[str, str]
    event_names: dict[str, str]
    event_properties: dict[str, str]
    company_traits: dict[str, str]
