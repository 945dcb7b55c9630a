"""Reading typed values out of decoded request parameters, with Stripe's error for each misuse."""

from __future__ import annotations

from typing import Any

from devtools.stripe_emulator.errors import invalid, missing

Params = dict[str, Any]

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0", ""})


def text(params: Params, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str):
        raise invalid(name, f"Invalid string: {value!r}")
    return value


def required_text(params: Params, name: str) -> str:
    value = text(params, name, required=True)
    assert value is not None
    return value


def integer(params: Params, name: str, *, required: bool = False, minimum: int = 0) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing(name)
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise invalid(name, f"Invalid integer: {value}", "parameter_invalid_integer") from None
    if number < minimum:
        raise invalid(
            name,
            f"This value must be greater than or equal to {minimum}.",
            "parameter_invalid_integer",
        )
    return number


def boolean(params: Params, name: str) -> bool:
    value = params.get(name)
    if value is None:
        return False
    lowered = str(value).lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise invalid(name, f"Invalid boolean: {value}", "parameter_invalid_boolean")


def string_list(params: Params, name: str) -> list[str] | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise invalid(name, f"Invalid array: {name}", "parameter_invalid_array")


def metadata(params: Params, current: dict[str, str] | None = None) -> dict[str, str]:
    """Stripe merges metadata on update and deletes keys sent with an empty value."""
    merged = dict(current or {})
    value = params.get("metadata")
    if value is None:
        return merged
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid("metadata", "Invalid hash", "parameter_invalid_hash")
    for key, item in value.items():
        if item == "":
            merged.pop(key, None)
        else:
            merged[key] = str(item)
    return merged
