"""Errors that users are expected to see: the CLI prints their message, never a traceback."""


class TrainsrvError(Exception):
    """An expected failure with a message that says what is wrong and what to do."""


class ConfigError(TrainsrvError):
    """A setting from the environment is missing or malformed."""


class DatabaseUnavailable(TrainsrvError):
    """The database cannot be reached or refused the connection."""


class SchemaOutOfDate(TrainsrvError):
    """The database is not at the migration head."""


class ValidationError(TrainsrvError):
    """Input rejected at the boundary; the message names the field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
