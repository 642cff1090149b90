"""Attribute definitions and writing custom attributes through them (R-ATTR-1, R-ATTR-2)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audience.attributes import values
from audience.attributes.models import MODELS, TYPES, AttributeDefinition
from audience.db import get_scoped, utcnow
from audience.errors import Conflict, Invalid

Changes = dict[str, tuple[Any, Any]]


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise Invalid(f"model must be one of {', '.join(MODELS)}", field="model")


def _check_options(type_: str, options: list[Any] | None) -> list[Any] | None:
    if options is None:
        return None
    if type_ not in ("string", "number", "list"):
        raise Invalid("options are only for string, number and list attributes", field="options")
    element = "string" if type_ == "list" else type_
    return [values.coerce(option, element, field="options") for option in options]


def create_definition(
    session: Session,
    *,
    environment_id: int,
    model: str,
    name: str,
    type: str,
    label: str | None = None,
    options: list[Any] | None = None,
    origin: str = "manual",
) -> AttributeDefinition:
    _check_model(model)
    values.check_name(name, field="name")
    if type not in TYPES:
        raise Invalid(f"type must be one of {', '.join(TYPES)}", field="type")
    if find_definitions(session, environment_id=environment_id, model=model, names=[name]):
        raise Conflict(f"{model} attribute {name!r} is already defined", field="name")
    definition = AttributeDefinition(
        environment_id=environment_id,
        model=model,
        name=name,
        label=label or name.replace("_", " ").capitalize(),
        type=type,
        options=_check_options(type, options),
        origin=origin,
        archived=False,
    )
    session.add(definition)
    session.flush()
    cache = session.info.get(_CACHE)
    if cache is not None:
        cache.setdefault((environment_id, model), {})[name] = definition
    return definition


_CACHE = "attribute_definitions"


def cache_definitions(session: Session) -> None:
    """Keep the definitions looked up in `session` (found or not) until `forget_definitions`.

    For a transaction that writes many profiles (an ingestion batch): one query per new name
    instead of one per write. Call `forget_definitions` after rolling back to a savepoint.
    """
    session.info[_CACHE] = {}


def forget_definitions(session: Session) -> None:
    if _CACHE in session.info:
        session.info[_CACHE] = {}


def find_definitions(
    session: Session, *, environment_id: int, model: str, names: list[str]
) -> dict[str, AttributeDefinition]:
    if not names:
        return {}
    cache: dict[tuple[int, str], dict[str, AttributeDefinition | None]] | None
    cache = session.info.get(_CACHE)
    known = {} if cache is None else cache.setdefault((environment_id, model), {})
    missing = [name for name in names if name not in known]
    if missing:
        query = select(AttributeDefinition).where(
            AttributeDefinition.environment_id == environment_id,
            AttributeDefinition.model == model,
            AttributeDefinition.name.in_(missing),
        )
        known.update(dict.fromkeys(missing))
        known.update((definition.name, definition) for definition in session.scalars(query))
    return {name: found for name in names if (found := known[name]) is not None}


def list_definitions(
    session: Session, *, environment_id: int, model: str | None = None, archived: bool | None = None
) -> list[AttributeDefinition]:
    query = select(AttributeDefinition).where(AttributeDefinition.environment_id == environment_id)
    if model is not None:
        _check_model(model)
        query = query.where(AttributeDefinition.model == model)
    if archived is not None:
        query = query.where(AttributeDefinition.archived == archived)
    order = (AttributeDefinition.model, AttributeDefinition.name)
    return list(session.scalars(query.order_by(*order)))


def get_definition(session: Session, *, environment_id: int, id: int) -> AttributeDefinition:
    return get_scoped(
        session,
        AttributeDefinition,
        environment_id=environment_id,
        id=id,
        what="attribute definition",
    )


def update_definition(
    session: Session,
    *,
    environment_id: int,
    id: int,
    changes: Mapping[str, Any],
) -> AttributeDefinition:
    """Label, options and archived can change; a type is fixed once values may exist."""
    definition = get_definition(session, environment_id=environment_id, id=id)
    if "label" in changes and changes["label"] is not None:
        definition.label = changes["label"]
    if "options" in changes:
        definition.options = _check_options(definition.type, changes["options"])
    if "archived" in changes and changes["archived"] is not None:
        definition.archived = changes["archived"]
    definition.updated_at = utcnow()
    return definition


def delete_definition(session: Session, *, environment_id: int, id: int) -> None:
    session.delete(get_definition(session, environment_id=environment_id, id=id))
    session.flush()


def write_custom_attributes(
    session: Session,
    *,
    environment_id: int,
    model: str,
    current: Mapping[str, Any],
    changes: Mapping[str, Any],
    field_prefix: str = "custom_attributes",
    on_invalid: Callable[[Invalid], None] | None = None,
) -> tuple[dict[str, Any], Changes]:
    """Apply `changes` (values or `{"$op": operand}`) to `current`.

    Undeclared attributes get an inferred definition from their first value; values are coerced
    to the defined type or rejected (Invalid naming the attribute), so nothing is half-applied.
    Returns the new attributes and {name: (old, new)} for what actually changed. With
    `on_invalid` (ingestion, R-ATTR-1) a bad attribute is reported to it and skipped instead.
    """
    result = dict(current)
    changed: Changes = {}
    wanted = {}
    for name, raw in changes.items():  # before any query: PostgreSQL can't compare some names
        try:
            values.check_name(name, field=f"{field_prefix}.{name}")
            wanted[name] = raw
        except Invalid as invalid:
            if on_invalid is None:
                raise
            on_invalid(invalid)
    definitions = find_definitions(
        session, environment_id=environment_id, model=model, names=list(wanted)
    )
    for name, raw in wanted.items():
        try:
            _write_one(
                session,
                environment_id,
                model,
                name,
                raw,
                result,
                changed,
                definitions,
                field_prefix,
            )
        except Invalid as invalid:
            if on_invalid is None:
                raise
            on_invalid(invalid)
    if len(result) > len(current):
        values.check_count(len(result), model=model, field=field_prefix)
    return result, changed


def _write_one(
    session: Session,
    environment_id: int,
    model: str,
    name: str,
    raw: Any,
    result: dict[str, Any],
    changed: Changes,
    definitions: dict[str, AttributeDefinition],
    field_prefix: str,
) -> None:
    """Apply one attribute's change to `result` (noting it in `changed`), or raise Invalid."""
    field = f"{field_prefix}.{name}"
    operation, operand = values.split_operation(raw, field=field)
    definition = definitions.get(name)
    if definition is not None and definition.archived:
        raise Invalid(f"attribute {name!r} is archived", field=field, code="archived")
    old = result.get(name)
    new = values.apply_operation(old, operation, operand, field=field)
    if new is not None:
        if definition is None:
            definition = _inferred(session, environment_id, model, name, values.infer_type(new))
            definitions[name] = definition
        new = values.coerce(new, definition.type, field=field)
        _check_choice(definition, new, field)
    if new == old and (new is None) == (name not in result):
        return
    if new is None:
        result.pop(name, None)
    else:
        result[name] = new
    changed[name] = (old, new)


def _inferred(
    session: Session, environment_id: int, model: str, name: str, type_: str
) -> AttributeDefinition:
    """The definition a first value implies; if a concurrent writer has just created it, that
    one (two clients setting a new attribute at once both succeed, rather than one getting 409)."""
    try:
        with session.begin_nested():
            return create_definition(
                session,
                environment_id=environment_id,
                model=model,
                name=name,
                type=type_,
                origin="inferred",
            )
    except IntegrityError:
        existing = session.scalar(
            select(AttributeDefinition).where(
                AttributeDefinition.environment_id == environment_id,
                AttributeDefinition.model == model,
                AttributeDefinition.name == name,
            )
        )
        if existing is None:
            raise
        cache = session.info.get(_CACHE)
        if cache is not None:
            cache.setdefault((environment_id, model), {})[name] = existing
        return existing


def _check_choice(definition: AttributeDefinition, value: Any, field: str) -> None:
    if not definition.options:
        return
    chosen = value if isinstance(value, list) else [value]
    outside = [item for item in chosen if item not in definition.options]
    if outside:
        allowed = ", ".join(map(str, definition.options))
        raise Invalid(f"{outside[0]!r} is not one of the options: {allowed}", field=field)
