"""The package's one exception type family.

Every error a user can cause (bad file, bad spec, bad config, bad data) is raised as an `MBIError` with a one-line
message naming the file, trial and column at fault. The CLI turns it into that line and exit status 2, no traceback.
"""

from __future__ import annotations


class MBIError(Exception):
    """A user-facing error: its message is one line that names what is wrong and where."""

    def __init__(self, message: str, *, file: str | None = None, trial: str | None = None,
                 column: str | None = None) -> None:
        self.file, self.trial, self.column = file, trial, column
        where = [f"{label} {value!s}" for label, value in
                 (("file", file), ("trial", trial), ("column", column)) if value is not None]
        text = " ".join(str(message).split())  # always one line
        super().__init__(f"{', '.join(where)}: {text}" if where else text)


class DataError(MBIError):
    """The data (a raw trial file or the IPD table) violates the contract."""


class SpecError(MBIError):
    """A consortium / mapping spec or an experiment config is malformed."""


class ConfigError(SpecError):
    """An experiment config is malformed or does not fit the data."""


class ModelLookupError(MBIError):
    """A run, run folder or model that was asked for does not exist (or has no such model).

    Raised where runs are read (``report.card_source``) and where a final model is found (``deploy``, which
    re-exports it): defined here so neither has to import the other for it."""
