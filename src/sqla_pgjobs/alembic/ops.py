"""The job schema's Alembic operations: plain data, each with its ``reverse()``.

What they do lives in :mod:`sqla_pgjobs.alembic.toimpl`, how autogenerate prints them in
:mod:`sqla_pgjobs.alembic.render` (the split Alembic itself uses).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic.operations import MigrateOperation, Operations

from sqla_pgjobs.errors import InvalidArgumentError, SchemaVersionError
from sqla_pgjobs.schema import (
    DEFAULT_SCHEMA,
    check_index_names,
    check_version,
    validate_schema_name,
)
from sqla_pgjobs.triggers import JobTrigger
from sqla_pgjobs.validation import check_access, check_identifier, check_name

if TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = [
    "CreateJobTriggerOp",
    "CreatePgjobsIndexesOp",
    "CreatePgjobsSchemaOp",
    "DowngradePgjobsSchemaOp",
    "DropJobTriggerOp",
    "DropPgjobsIndexesOp",
    "DropPgjobsSchemaOp",
    "GrantPgjobsAccessOp",
    "RevokePgjobsAccessOp",
    "UpgradePgjobsSchemaOp",
]


@Operations.register_operation("create_pgjobs_schema")
class CreatePgjobsSchemaOp(MigrateOperation):
    """Create the job schema at a given version (default: version 1, schema ``app_jobs``)."""

    def __init__(self, schema: str = DEFAULT_SCHEMA, version: int = 1) -> None:
        self.schema = validate_schema_name(schema)
        self.version = check_version(version)

    @classmethod
    def create_pgjobs_schema(
        cls, operations: Operations, schema: str = DEFAULT_SCHEMA, version: int = 1
    ) -> None:
        """Create the job schema ``schema`` at schema version ``version``.

        Without arguments this is version 1 in ``app_jobs``, forever: the call in a
        revision replays identically whatever library version runs it.
        """
        operations.invoke(cls(schema, version))

    def reverse(self) -> DropPgjobsSchemaOp:
        return DropPgjobsSchemaOp(self.schema, self.version)

    def to_diff_tuple(self) -> tuple[Hashable, ...]:
        return ("create_pgjobs_schema", self.schema, self.version)


@Operations.register_operation("drop_pgjobs_schema")
class DropPgjobsSchemaOp(MigrateOperation):
    """Drop the job schema. ``version`` is the version its reverse re-creates."""

    def __init__(self, schema: str = DEFAULT_SCHEMA, version: int = 1) -> None:
        self.schema = validate_schema_name(schema)
        self.version = check_version(version)

    @classmethod
    def drop_pgjobs_schema(
        cls, operations: Operations, schema: str = DEFAULT_SCHEMA, version: int = 1
    ) -> None:
        """Drop the job schema ``schema`` and all its jobs.

        Refuses, naming them, while objects outside the schema (enqueue triggers on your
        tables) depend on it. ``version`` only matters to ``reverse()``.
        """
        operations.invoke(cls(schema, version))

    def reverse(self) -> CreatePgjobsSchemaOp:
        return CreatePgjobsSchemaOp(self.schema, self.version)

    def to_diff_tuple(self) -> tuple[Hashable, ...]:
        return ("drop_pgjobs_schema", self.schema, self.version)


class _VersionStepOp(MigrateOperation):
    """Move an installed job schema from ``from_version`` to ``to_version``.

    Both versions are explicit so the revision means the same thing online, offline and
    after any library upgrade; online, each step's SQL checks the installed version first.
    """

    #: ``"upgrade"`` or ``"downgrade"``: the op's name without ``_pgjobs_schema``.
    direction: str

    def __init__(self, to_version: int, from_version: int, schema: str = DEFAULT_SCHEMA) -> None:
        self.to_version = check_version(to_version, "to_version")
        self.from_version = check_version(from_version, "from_version")
        upward = self.to_version > self.from_version
        if upward != (self.direction == "upgrade") or self.to_version == self.from_version:
            relation = ">" if self.direction == "upgrade" else "<"
            raise SchemaVersionError(
                f"{self.direction}_pgjobs_schema needs to_version {relation} from_version, "
                f"got from_version={from_version}, to_version={to_version}"
            )
        self.schema = validate_schema_name(schema)

    def to_diff_tuple(self) -> tuple[Hashable, ...]:
        return (f"{self.direction}_pgjobs_schema", self.schema, self.from_version, self.to_version)


@Operations.register_operation("upgrade_pgjobs_schema")
class UpgradePgjobsSchemaOp(_VersionStepOp):
    """Move an installed job schema up from ``from_version`` to ``to_version``."""

    direction = "upgrade"

    @classmethod
    def upgrade_pgjobs_schema(
        cls,
        operations: Operations,
        to_version: int,
        *,
        from_version: int,
        schema: str = DEFAULT_SCHEMA,
    ) -> None:
        """Upgrade the job schema ``schema`` from ``from_version`` to ``to_version``."""
        operations.invoke(cls(to_version, from_version, schema))

    def reverse(self) -> DowngradePgjobsSchemaOp:
        return DowngradePgjobsSchemaOp(self.from_version, self.to_version, self.schema)


@Operations.register_operation("downgrade_pgjobs_schema")
class DowngradePgjobsSchemaOp(_VersionStepOp):
    """Move an installed job schema down from ``from_version`` to ``to_version``."""

    direction = "downgrade"

    @classmethod
    def downgrade_pgjobs_schema(
        cls,
        operations: Operations,
        to_version: int,
        *,
        from_version: int,
        schema: str = DEFAULT_SCHEMA,
    ) -> None:
        """Downgrade the job schema ``schema`` from ``from_version`` to ``to_version``."""
        operations.invoke(cls(to_version, from_version, schema))

    def reverse(self) -> UpgradePgjobsSchemaOp:
        return UpgradePgjobsSchemaOp(self.from_version, self.to_version, self.schema)


class _AccessOp(MigrateOperation):
    """Grant or revoke an access level to the job schema for an existing role."""

    #: ``"grant"`` or ``"revoke"``: the op's name without ``_pgjobs_access``.
    verb: str

    def __init__(self, role_name: str, access: str, schema: str = DEFAULT_SCHEMA) -> None:
        self.role_name = check_identifier("role_name", role_name)
        self.access = check_access("access", access)
        self.schema = validate_schema_name(schema)

    def to_diff_tuple(self) -> tuple[Hashable, ...]:
        return (f"{self.verb}_pgjobs_access", self.schema, self.role_name, self.access)


@Operations.register_operation("grant_pgjobs_access")
class GrantPgjobsAccessOp(_AccessOp):
    """Give an existing role an access level to the job schema (the role is not created)."""

    verb = "grant"

    @classmethod
    def grant_pgjobs_access(
        cls, operations: Operations, role_name: str, access: str, *, schema: str = DEFAULT_SCHEMA
    ) -> None:
        """Give ``role_name`` the ``access`` level: ``enqueue`` (add jobs and schedules),
        ``worker`` (also take, finish and schedule jobs) or ``operator`` (also administer
        any job and read the tables), or ``read`` (schema version 2: only read the tables,
        for dashboards and metrics). Nothing else: no ownership, no table writes.
        """
        operations.invoke(cls(role_name, access, schema))

    def reverse(self) -> RevokePgjobsAccessOp:
        return RevokePgjobsAccessOp(self.role_name, self.access, self.schema)


@Operations.register_operation("revoke_pgjobs_access")
class RevokePgjobsAccessOp(_AccessOp):
    """Take back what :class:`GrantPgjobsAccessOp` gave for the level."""

    verb = "revoke"

    @classmethod
    def revoke_pgjobs_access(
        cls, operations: Operations, role_name: str, access: str, *, schema: str = DEFAULT_SCHEMA
    ) -> None:
        """Take back from ``role_name`` what granting ``access`` gave."""
        operations.invoke(cls(role_name, access, schema))

    def reverse(self) -> GrantPgjobsAccessOp:
        return GrantPgjobsAccessOp(self.role_name, self.access, self.schema)


class _IndexesOp(MigrateOperation):
    """Build or drop optional indexes of the job schema (``sql/indexes.sql``)."""

    #: ``"create"`` or ``"drop"``: the op's name without ``_pgjobs_indexes``.
    verb: str

    def __init__(self, names: tuple[str, ...], schema: str = DEFAULT_SCHEMA) -> None:
        self.names = tuple(check_index_names(names))
        self.schema = validate_schema_name(schema)

    def to_diff_tuple(self) -> tuple[Hashable, ...]:
        return (f"{self.verb}_pgjobs_indexes", self.schema, *self.names)


@Operations.register_operation("create_pgjobs_indexes")
class CreatePgjobsIndexesOp(_IndexesOp):
    """Build optional indexes concurrently, outside the migration's transaction."""

    verb = "create"

    @classmethod
    def create_pgjobs_indexes(
        cls, operations: Operations, *names: str, schema: str = DEFAULT_SCHEMA
    ) -> None:
        """Build the optional indexes ``names``: ``failed`` (jobs failed for good, for the
        dashboard's and ``pgjobs jobs list``'s failed state) and ``payload`` (JSON
        containment on the payload; it costs every enqueue). ``CREATE INDEX CONCURRENTLY``
        does not lock the jobs table against writes, so it cannot run in a transaction: the
        op commits the migration's transaction so far, builds them in autocommit mode and
        begins a new one (Alembic's ``autocommit_block``). An index a failed build left
        invalid is built again; one already there is kept.
        """
        operations.invoke(cls(names, schema))

    def reverse(self) -> DropPgjobsIndexesOp:
        return DropPgjobsIndexesOp(self.names, self.schema)


@Operations.register_operation("drop_pgjobs_indexes")
class DropPgjobsIndexesOp(_IndexesOp):
    """Drop optional indexes concurrently, outside the migration's transaction."""

    verb = "drop"

    @classmethod
    def drop_pgjobs_indexes(
        cls, operations: Operations, *names: str, schema: str = DEFAULT_SCHEMA
    ) -> None:
        """Drop the optional indexes ``names`` (``DROP INDEX CONCURRENTLY``, in autocommit
        mode like :meth:`CreatePgjobsIndexesOp.create_pgjobs_indexes`)."""
        operations.invoke(cls(names, schema))

    def reverse(self) -> CreatePgjobsIndexesOp:
        return CreatePgjobsIndexesOp(self.names, self.schema)


@Operations.register_operation("create_job_trigger")
class CreateJobTriggerOp(MigrateOperation):
    """Create an enqueue trigger on a table."""

    def __init__(self, table_name: str, trigger: JobTrigger, schema: str | None = None) -> None:
        if not isinstance(trigger, JobTrigger):
            raise InvalidArgumentError("trigger", trigger, "it must be a JobTrigger")
        self.table_name = str(check_name("table_name", table_name))
        self.trigger = trigger
        self.schema = schema

    @classmethod
    def create_job_trigger(
        cls,
        operations: Operations,
        table_name: str,
        trigger: JobTrigger,
        *,
        schema: str | None = None,
    ) -> None:
        """Create ``trigger`` (a :class:`~sqla_pgjobs.triggers.JobTrigger`) on the table."""
        operations.invoke(cls(table_name, trigger, schema))

    def reverse(self) -> DropJobTriggerOp:
        return DropJobTriggerOp(self.table_name, self.trigger, self.schema)

    def to_diff_tuple(self) -> tuple[Hashable, ...]:
        return ("create_job_trigger", self.schema, self.table_name, self.trigger.name)


@Operations.register_operation("drop_job_trigger")
class DropJobTriggerOp(MigrateOperation):
    """Drop an enqueue trigger from a table. Given the whole :class:`JobTrigger` (as
    autogenerate writes it), it can be reversed; given only its name, it cannot."""

    def __init__(
        self, table_name: str, trigger: JobTrigger | str, schema: str | None = None
    ) -> None:
        if not isinstance(trigger, JobTrigger | str):
            raise InvalidArgumentError("trigger", trigger, "it must be a JobTrigger or a name")
        self.table_name = str(check_name("table_name", table_name))
        self.trigger = trigger
        self.schema = schema

    @property
    def name(self) -> str:
        return self.trigger if isinstance(self.trigger, str) else self.trigger.name

    @classmethod
    def drop_job_trigger(
        cls,
        operations: Operations,
        table_name: str,
        trigger: JobTrigger | str,
        *,
        schema: str | None = None,
    ) -> None:
        """Drop the enqueue trigger ``trigger`` (a JobTrigger, or its name) from the table."""
        operations.invoke(cls(table_name, trigger, schema))

    def reverse(self) -> CreateJobTriggerOp:
        if isinstance(self.trigger, str):
            raise InvalidArgumentError(
                "trigger", self.trigger, "reversing needs the whole JobTrigger, not its name"
            )
        return CreateJobTriggerOp(self.table_name, self.trigger, self.schema)

    def to_diff_tuple(self) -> tuple[Hashable, ...]:
        return ("drop_job_trigger", self.schema, self.table_name, self.name)
