"""Errors raised for bad input: each message names the field, the bad value and what is allowed."""

from __future__ import annotations


class SpecError(ValueError):
    """A hardware spec, sweep spec or other input file is invalid."""


def bad(field: str, value: object, allowed: str) -> ValueError:
    """Build the one-line error used everywhere: field, bad value, what is allowed."""
    return ValueError(f"{field}: got {value!r}; allowed: {allowed}")
