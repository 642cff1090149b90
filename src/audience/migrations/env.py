from __future__ import annotations

from typing import Any

from alembic import context

from audience.models import Base
from audience.segments.indexes import PREFIX as MANAGED_INDEXES


def include_object(item: Any, name: str | None, kind: str, reflected: bool, _: Any) -> bool:
    # Indexes that saved segments make and drop at run time are not part of the schema.
    return not (kind == "index" and reflected and (name or "").startswith(MANAGED_INDEXES))


config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
