"""User-facing errors.

Anything a user can cause (a bad file, a wrong option, a missing key) raises a subclass of
:class:`HjcagError` with a message that says what is wrong, where, and how to fix it. The CLI prints
the message without a traceback and exits with status 2; everything else is a bug and keeps its traceback.
"""


class HjcagError(Exception):
    """Base class for errors caused by user input or configuration."""


class ConfigError(HjcagError):
    """params.yaml or a command-line option is invalid."""


class FeatureFileError(HjcagError):
    """A features file (.npz / .pkl) is missing a key, has a wrong shape or holds non-finite values."""


class DataError(HjcagError):
    """A dataset (CSV, manifest, media) cannot be read or is inconsistent."""
