"""Keeping the job schema out of autogenerate runs on your own models.

With ``include_schemas=True``, autogenerate compares every schema in the database with
your ``target_metadata``, finds the job schema's tables in none of your models, and writes
``op.drop_table("jobs", schema="app_jobs")``. Pass the filter in ``env.py``::

    from sqla_pgjobs.alembic import include_name

    context.configure(..., include_schemas=True, include_name=include_name)

or, with a filter of your own or another schema name,
``include_name=pgjobs_include_name("my_jobs", then=my_filter)``.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic.runtime.environment import NameFilterParentNames, NameFilterType

from sqla_pgjobs.schema import DEFAULT_SCHEMA, validate_schema_name

__all__ = ["IncludeName", "include_name", "pgjobs_include_name"]

#: The shape of Alembic's ``include_name`` hook (its own types, so env.py type-checks).
IncludeName = Callable[[str | None, NameFilterType, NameFilterParentNames], bool]


def pgjobs_include_name(
    schema: str = DEFAULT_SCHEMA, *, then: IncludeName | None = None
) -> IncludeName:
    """An ``include_name`` hook that hides the job schema ``schema`` from autogenerate and
    leaves every other name to ``then`` (or includes it)."""
    validate_schema_name(schema)

    def include(
        name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        if type_ == "schema" and name == schema:
            return False
        if parent_names.get("schema_name") == schema:
            return False
        return then(name, type_, parent_names) if then is not None else True

    return include


#: The hook for the default schema name, ``app_jobs``.
include_name = pgjobs_include_name()
