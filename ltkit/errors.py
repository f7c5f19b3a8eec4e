"""Typed errors. The CLI boundary turns an `LtkitError` into one line on stderr and exit 2."""


class LtkitError(Exception):
    """Bad input or usage: the message says what is wrong and what to do."""

    exit_code = 2


class ConfigError(LtkitError):
    """An option, or a combination of options, that cannot work."""


class DataError(LtkitError):
    """A data set that is missing, empty, or not what it claims to be."""


class ArtifactError(LtkitError):
    """An artifact (checkpoint, store, table, classifier) that is missing, foreign or damaged."""


class StaleOutput(ArtifactError):
    """An output path holding an artifact made otherwise (other options, inputs or schedule):
    replaced only with --force (a sweep replaces its own)."""


class StoreError(ArtifactError):
    """A feature store that is not an ltkit store, of another schema version, or truncated."""
