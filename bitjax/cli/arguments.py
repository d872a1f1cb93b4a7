"""Helpers shared by the command modules: checks of command-line values."""

from __future__ import annotations

from bitjax.errors import ConfigError


def at_least(value: int | None, least: int, flag: str, what: str) -> None:
    """A count given on the command line that must be at least `least` (None: the default applies)."""
    if value is not None and value < least:
        raise ConfigError(f"{flag} {value}: {what} must be at least {least}")
