"""Errors a user can cause. The CLI prints their message as one line and exits with code 2."""

from __future__ import annotations


class CnnlabError(Exception):
    """A problem the user can fix: the message names the file or value and what to do."""


class DataError(CnnlabError):
    """A dataset file is missing, corrupt, truncated or inconsistent."""


class ImageError(CnnlabError):
    """An input image cannot be read or is unsafe to decode."""


class ConfigError(CnnlabError):
    """A configuration value or architecture file is invalid."""


class RunError(CnnlabError):
    """A run folder or model file is missing or unusable."""


class UnsafeModelError(RunError):
    """A model file holds code that loading it would run; refused unless the user trusts it."""
