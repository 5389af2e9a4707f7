"""User-facing errors: one family, so the CLI can print a single clear line and exit 2."""

from __future__ import annotations


class PvdataError(Exception):
    """An error the user can fix: the message says what was given, what is valid, and how to fix it."""

    exit_code = 2


class ConfigError(PvdataError):
    """A bad flag, config file or spec."""


class ModelError(PvdataError):
    """A model that cannot be resolved, loaded or understood (alias, layers, architecture)."""


class VectorError(PvdataError):
    """A vector file or value that does not fit (shape, model, format)."""


class DataError(PvdataError):
    """Bad input data: names the file, line and field."""


class WarehouseError(PvdataError):
    """A warehouse file or table that does not match its schema, or a run that cannot proceed."""


class MissingExtraError(PvdataError):
    """An optional dependency is missing; names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install the '{extra}' extra: "
            f".venv/bin/pip install -c constraints.txt -e '.[{extra}]'"
        )
