"""A typed task's arguments: bound and checked against its function's signature, and
carried as the job's payload, a JSON object with one key per argument.

Checking is pydantic's (v2): each annotation is a pydantic type, so plain JSON types,
``datetime``/``date``/``time``, ``UUID``, ``Decimal``, enums, dataclasses, ``TypedDict``
and pydantic models are supported, nested too. At enqueue the values are checked strictly
(``"42"`` is not an ``int``: the caller has real Python values), then encoded in pydantic's
JSON mode (times in ISO 8601, UUIDs and decimals as text, enums as their values). When a
worker decodes a payload, the JSON forms are accepted back (an ISO 8601 text for a
``datetime``); a payload that still does not fit cannot ever fit, and is refused with an
:class:`~sqla_pgjobs.errors.InvalidPayloadError`.

pydantic is imported when the first typed task is declared, not by ``import sqla_pgjobs``.
"""

from __future__ import annotations

import inspect
import re
import string
import typing
from typing import TYPE_CHECKING, Any

from sqla_pgjobs.errors import InvalidArgumentError, InvalidPayloadError, TaskArgumentError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

__all__ = ["Arguments"]


class Arguments:
    """The arguments of task ``task`` run by ``function``; the parameters named in
    ``supplied`` (the job, say) are given by the worker, not carried in the payload."""

    def __init__(
        self, task: str, function: Callable[..., Any], *, supplied: Collection[str] = ()
    ) -> None:
        import pydantic

        self.task = task
        signature = inspect.signature(function)
        try:
            hints = typing.get_type_hints(function, include_extras=True)
        except (NameError, TypeError) as exc:
            raise InvalidArgumentError(
                "handler", function, f"its annotations must resolve at import ({exc})"
            ) from None
        parameters = [p for p in signature.parameters.values() if p.name not in supplied]
        fields: dict[str, Any] = {}
        for index, parameter in enumerate(parameters):
            if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                raise InvalidArgumentError(
                    "handler",
                    function,
                    f"a typed task's parameters are named in its payload: {parameter} is "
                    "positional-only or variadic",
                )
            default = ... if parameter.default is parameter.empty else parameter.default
            # Fields under neutral names, aliased to the parameters' names, so that a
            # parameter may be called anything (json, copy, model_config...).
            fields[f"p{index}"] = (
                hints.get(parameter.name, Any),
                pydantic.Field(default, alias=parameter.name),
            )
        self._names = [parameter.name for parameter in parameters]
        self._signature = signature.replace(parameters=parameters)
        self._described = ", ".join(
            _describe(parameter, hints.get(parameter.name)) for parameter in parameters
        )
        self._model = pydantic.create_model(
            f"Arguments of {task}",
            # NaN and infinities are no JSON: refused (a float argument), or left for the
            # payload check to refuse (an Any one), never turned into null.
            __config__=pydantic.ConfigDict(
                extra="forbid",
                validate_default=False,
                allow_inf_nan=False,
                ser_json_inf_nan="constants",
            ),
            **fields,
        )

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def describe(self) -> str:
        """The task as it is called: ``send_receipt(order_id: int, note: str = '')``."""
        return f"{self.task}({self._described})"

    def encode(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The payload for a call with ``args`` and ``kwargs``; raises
        :class:`~sqla_pgjobs.errors.TaskArgumentError` naming the argument at fault."""
        import pydantic
        from pydantic_core import PydanticSerializationError

        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise self._binding_error(args, kwargs, exc) from None
        try:
            checked = self._model.model_validate(bound.arguments, strict=True)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            name = _location(first["loc"])
            raise TaskArgumentError(
                self.task, name, first.get("input"), f"{first['msg']} ({self.describe()})"
            ) from None
        try:
            encoded: dict[str, Any] = checked.model_dump(mode="json", by_alias=True)
        except PydanticSerializationError as exc:
            raise TaskArgumentError(
                self.task,
                ", ".join(bound.arguments),
                None,
                f"not JSON-serialisable ({exc})",
                known=False,
            ) from None
        # Only the arguments given: a default is the function's, whenever the job runs.
        return {name: encoded[name] for name in bound.arguments}

    def values(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Every argument of a call (defaults included) by name, as given: what a key or
        queue template is filled with (after :meth:`encode` accepted the call)."""
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def template(self, option: str, text: str) -> str:
        """``text`` if every field it names (``receipt:{order_id}``) is an argument."""
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(text) if field]
        except ValueError as exc:
            raise InvalidArgumentError(
                option, text, f"it must be a format string ({exc})"
            ) from None
        for field in fields:
            name = re.split(r"[.\[]", field, maxsplit=1)[0]
            if name not in self._names:
                raise InvalidArgumentError(
                    option,
                    text,
                    f"{{{field}}} names no argument of {self.describe()} (nor a positional one)",
                )
        return text

    def decode(self, payload: Any) -> dict[str, Any]:
        """The keyword arguments for the function from a job's payload; raises
        :class:`~sqla_pgjobs.errors.InvalidPayloadError` when it cannot be them."""
        import pydantic

        if not isinstance(payload, dict):
            raise InvalidPayloadError(
                self.task, payload, f"it must be a JSON object of arguments ({self.describe()})"
            )
        try:
            checked = self._model.model_validate(payload)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{_location(error['loc'])}: {error['msg']}" for error in exc.errors()
            )
            raise InvalidPayloadError(
                self.task, payload, f"{problems} ({self.describe()})"
            ) from None
        return {
            name: getattr(checked, f"p{index}")
            for index, name in enumerate(self._names)
            if name in payload
        }

    def _binding_error(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], exc: TypeError
    ) -> TaskArgumentError:
        unknown = [name for name in kwargs if name not in self._names]
        if unknown:
            return TaskArgumentError(
                self.task,
                unknown[0],
                kwargs[unknown[0]],
                f"no such argument ({self.describe()})",
            )
        if len(args) > len(self._names):
            return TaskArgumentError(
                self.task,
                f"#{len(self._names) + 1}",
                args[len(self._names)],
                f"too many positional arguments ({self.describe()})",
            )
        given = set(self._names[: len(args)]) | set(kwargs)
        required = [
            name
            for name, parameter in self._signature.parameters.items()
            if parameter.default is parameter.empty and name not in given
        ]
        if required:
            return TaskArgumentError(
                self.task, required[0], None, f"missing ({self.describe()})", known=False
            )
        return TaskArgumentError(self.task, "arguments", None, str(exc), known=False)


def _describe(parameter: inspect.Parameter, hint: Any) -> str:
    """``name: type = default``, the type without its module (``list[Line]``)."""
    text = parameter.name
    if hint is not None:
        shown = hint.__name__ if isinstance(hint, type) else str(hint)
        text += ": " + re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", shown)
    if parameter.default is not parameter.empty:
        text += f" = {parameter.default!r}"
    return text


def _location(location: tuple[int | str, ...]) -> str:
    """pydantic's location of an error: ``order_id``, ``lines[0].sku``."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "arguments"
