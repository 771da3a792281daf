"""Checks of the job functions' arguments, made in Python before anything reaches the database.

Each check returns the value in the form the statement binds, or raises
:class:`~sqla_pgjobs.errors.InvalidArgumentError` naming the argument, the value and what
is allowed. The limits are the schema's CHECK constraints.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqla_pgjobs.errors import InvalidArgumentError, InvalidWorkerIdError

__all__ = [
    "ACCESS_LEVELS",
    "MAX_IDENTIFIER_BYTES",
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "OUTCOMES",
    "check_access",
    "check_aware",
    "check_count",
    "check_id",
    "check_identifier",
    "check_ids",
    "check_interval",
    "check_key",
    "check_list",
    "check_name",
    "check_outcome",
    "check_payload",
    "check_positive",
    "check_priority",
    "check_retention",
    "check_seconds",
    "check_tenant",
    "check_text",
    "check_worker_id",
    "json_text",
]

MAX_NAME_LENGTH = 126  # task identifiers and queue names (jobs_task_identifier_check)
MAX_KEY_LENGTH = 512  # job keys (jobs_key_check)
MIN_WORKER_ID_LENGTH = 4  # jobs_locked_by_check
#: PostgreSQL keeps the first 63 bytes of an identifier (NAMEDATALEN - 1) and silently drops
#: the rest: a longer role, trigger or schema name would name something else.
MAX_IDENTIFIER_BYTES = 63
#: The access levels of ``grant_access``. From ``enqueue`` up each contains the one
#: before it; ``read`` (schema version 2) only reads, and ``operator`` contains it too (the
#: SQL function ``app_jobs.access_functions`` lists what each gives).
ACCESS_LEVELS = ("read", "enqueue", "worker", "operator")
#: The longest duration (job_expiry, lease, heartbeat_timeout): about 1000 years, so that
#: now() plus or minus it stays a timestamp both PostgreSQL and Python can read (a larger
#: one made every get_jobs fail with "timestamp out of range").
MAX_INTERVAL = timedelta(days=365_000)
#: The largest payload, as UTF-8 JSON text. PostgreSQL's own limit is 1 GB per value and per
#: message (one add_jobs call sends all its payloads in one array), and a worker holds up to
#: `concurrency` payloads at once: 16 MiB keeps a worker of concurrency 10 under 200 MiB of
#: payloads and leaves room for 60 of them in one add_jobs. Bigger data belongs in a table
#: or object store, with its key in the payload.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


def check_text(argument: str, value: object, *, optional: bool = True) -> str | None:
    """A text PostgreSQL can store: a ``str`` without NUL characters."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(argument, value, "it must be a str")
    if "\x00" in value:
        raise InvalidArgumentError(argument, value, "it must not contain NUL characters")
    _check_unicode(argument, value)
    return value


def _check_unicode(argument: str, text: str) -> None:
    """Refuse a ``str`` that is not valid Unicode (a lone surrogate, e.g. from a bad
    decode): the driver could not encode it, and would fail with a UnicodeEncodeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            argument,
            text,
            f"it must be valid Unicode (it has a lone surrogate at position {exc.start})",
        ) from None


def check_name(argument: str, value: object, *, optional: bool = False) -> str | None:
    """A task identifier or queue name: 1 to 126 characters."""
    text = check_text(argument, value, optional=optional)
    if text is not None and not 0 < len(text) <= MAX_NAME_LENGTH:
        raise InvalidArgumentError(
            argument, value, f"it must be a text of 1 to {MAX_NAME_LENGTH} characters"
        )
    return text


def check_key(argument: str, value: object) -> str | None:
    """A job key: 1 to 512 characters, or None for no key."""
    text = check_text(argument, value)
    if text is not None and not 0 < len(text) <= MAX_KEY_LENGTH:
        raise InvalidArgumentError(
            argument, value, f"it must be None or a text of 1 to {MAX_KEY_LENGTH} characters"
        )
    return text


def check_identifier(argument: str, value: object) -> str:
    """A name PostgreSQL keeps as given (a role, a trigger): 1 to 63 bytes of text."""
    text = check_text(argument, value, optional=False)
    assert text is not None
    if not 0 < len(text.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        raise InvalidArgumentError(
            argument, value, f"it must be a name of 1 to {MAX_IDENTIFIER_BYTES} bytes"
        )
    return text


def check_access(argument: str, value: object) -> str:
    """An access level of ``grant_access``."""
    if not isinstance(value, str) or value not in ACCESS_LEVELS:
        raise InvalidArgumentError(argument, value, f"it must be one of {', '.join(ACCESS_LEVELS)}")
    return value


def check_worker_id(value: object, argument: str = "worker_id") -> str:
    """A worker id: a text of at least 4 characters."""
    allowed = (
        f"a worker id must be a text of at least {MIN_WORKER_ID_LENGTH} characters "
        "without NUL characters"
    )
    if not isinstance(value, str) or len(value) < MIN_WORKER_ID_LENGTH or "\x00" in value:
        raise InvalidWorkerIdError(argument, value, allowed)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidWorkerIdError(argument, value, allowed + ", in valid Unicode") from None
    return value


def _integer(argument: str, value: object, low: int, high: int, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(argument, value, allowed)
    return value


def check_positive(argument: str, value: object, *, optional: bool = True) -> int | None:
    """A count such as max_attempts: an integer from 1 to 2**31 - 1."""
    if value is None and optional:
        return None
    return _integer(argument, value, 1, _INT_MAX, f"it must be an integer from 1 to {_INT_MAX}")


def check_count(argument: str, value: object, *, optional: bool = True) -> int | None:
    """A count that may be zero, such as attempts: an integer from 0 to 2**31 - 1."""
    if value is None and optional:
        return None
    return _integer(argument, value, 0, _INT_MAX, f"it must be an integer from 0 to {_INT_MAX}")


def check_priority(argument: str, value: object) -> int | None:
    """A priority (lower runs first), attempts count and the like: a 32-bit integer."""
    if value is None:
        return None
    return _integer(
        argument, value, _INT_MIN, _INT_MAX, f"it must be an integer from {_INT_MIN} to {_INT_MAX}"
    )


def check_port(argument: str, value: object) -> int:
    """A TCP port to listen on: an integer from 0 to 65535 (0: any free port)."""
    return _integer(
        argument, value, 0, 65535, "it must be an integer from 0 to 65535 (0: any free port)"
    )


def check_id(argument: str, value: object) -> int:
    """A job or schedule id: a 64-bit integer."""
    return _integer(argument, value, _BIGINT_MIN, _BIGINT_MAX, "it must be a 64-bit integer")


def check_ids(argument: str, values: object) -> list[int]:
    """A collection of job or schedule ids."""
    items = check_list(argument, values, "it must be an iterable of integer ids")
    return [check_id(f"{argument}[{i}]", value) for i, value in enumerate(items)]


def check_list(argument: str, values: object, allowed: str) -> list[Any]:
    """The elements of a list, tuple, generator or the like; a text (whose characters
    would pass for elements) or a non-iterable is refused with ``allowed``."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise InvalidArgumentError(argument, values, allowed)
    return list(values)


def check_aware(argument: str, value: object) -> datetime | None:
    """A point in time: an aware :class:`~datetime.datetime` (a naive one is ambiguous)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgumentError(argument, value, "it must be a datetime with a time zone")
    try:
        offset = value.utcoffset()
    except ValueError as exc:  # a tzinfo giving an offset of a day or more
        raise InvalidArgumentError(argument, value, f"its time zone is invalid ({exc})") from None
    if offset is None:
        raise InvalidArgumentError(
            argument,
            value,
            "it must have a time zone (a naive datetime is ambiguous; "
            "use e.g. datetime.now(timezone.utc))",
        )
    try:
        value.astimezone(UTC)
    except OverflowError:
        # Stored, it would read back (as UTC) as a year PostgreSQL has but Python has not.
        raise InvalidArgumentError(
            argument, value, "it must fall within the years 1 to 9999 in UTC"
        ) from None
    return value


def check_interval(argument: str, value: object) -> timedelta | None:
    """A duration such as job_expiry or a lease: a positive :class:`~datetime.timedelta`."""
    if value is None:
        return None
    if not isinstance(value, timedelta) or not timedelta(0) < value <= MAX_INTERVAL:
        raise InvalidArgumentError(
            argument,
            value,
            f"it must be a positive timedelta of at most {MAX_INTERVAL.days} days",
        )
    return value


#: How a finished job ended, as job_history records it (schema version 2).
OUTCOMES = ("completed", "failed", "cancelled", "discarded")


def check_outcome(argument: str, value: object) -> str:
    """An outcome of a finished job: one of :data:`OUTCOMES`."""
    if value not in OUTCOMES:
        raise InvalidArgumentError(argument, value, f"it must be one of {', '.join(OUTCOMES)}")
    assert isinstance(value, str)
    return value


def check_retention(argument: str, value: object) -> timedelta | None:
    """How long to keep history rows: a timedelta from zero (record nothing) to
    :data:`MAX_INTERVAL`, or None (keep forever)."""
    if value is None:
        return None
    if not isinstance(value, timedelta) or not timedelta(0) <= value <= MAX_INTERVAL:
        raise InvalidArgumentError(
            argument,
            value,
            f"it must be a timedelta from 0 (record nothing) to {MAX_INTERVAL.days} days, "
            "or None (keep forever)",
        )
    return value


def check_tenant(argument: str, value: object) -> uuid.UUID | None:
    """A tenant (database_id): a UUID, its text form, or None for no tenant."""
    if value is None or isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidArgumentError(argument, value, "it must be a UUID (or its text) or None")


def check_seconds(argument: str, value: object) -> timedelta | None:
    """A duration given as a number of seconds or a timedelta (see :func:`check_interval`);
    NaN, infinities and numbers too big for a timedelta are refused, not raised raw."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return check_interval(argument, value)
    allowed = f"it must be a positive number of seconds of at most {MAX_INTERVAL.days} days"
    try:
        return check_interval(argument, timedelta(seconds=value))
    except (OverflowError, ValueError):  # NaN, inf, 1e20; InvalidArgumentError included
        raise InvalidArgumentError(argument, value, allowed) from None


def check_payload(argument: str, value: Any) -> str | None:
    """A job payload as JSON text (see :func:`json_text`): at most
    :data:`MAX_PAYLOAD_BYTES` bytes of it. The error does not repeat the payload itself."""
    text = json_text(argument, value)
    if text is not None and len(text) > MAX_PAYLOAD_BYTES // 4:
        size = len(text.encode("utf-8"))
        if size > MAX_PAYLOAD_BYTES:
            raise InvalidArgumentError(
                argument,
                None,
                f"its JSON text is {size} bytes; at most {MAX_PAYLOAD_BYTES} "
                f"({MAX_PAYLOAD_BYTES // 2**20} MiB) are allowed",
                known=False,
            )
    return text


def json_text(argument: str, value: Any) -> str | None:
    """``value`` as JSON text, or None for the default; anything ``json`` cannot encode
    exactly (NaN, infinities, sets, arbitrary objects) is refused."""
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            argument, value, f"it must be JSON-serializable ({exc})"
        ) from exc
    except RecursionError:
        raise InvalidArgumentError(
            argument, value, "it must be JSON-serializable (it is nested too deeply)"
        ) from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            argument, value, "it must be valid Unicode (one of its texts has a lone surrogate)"
        ) from None
    return text
