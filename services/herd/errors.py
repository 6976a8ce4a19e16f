"""Every way Herd fails on purpose, in one tree; the `herd` command maps it to its exit status.

    HerdError                 anything Herd raises on purpose
    ├── UserError             bad input, configuration or usage: the user fixes it (exit status 2)
    │     SettingsError (HERD_*), ConfigError and YamlError (herd file), InputError (documents,
    │     arguments), UnknownJobError, PolicyError, CalibrationDataError, NothingToCalibrateError,
    │     GuaranteeError, UnreachableTargetError, RouterError, EncoderUnavailableError, SchemaError
    │     (run `herd migrate`), OutputPathError, RenderError, RequestError, LineProblem,
    │     UnknownModelError, KeysError, ApiError and BodyTooLargeError (HTTP 4xx), FlowerConfigError,
    │     UnknownScorerError
    └── ServiceError          a service, endpoint, database or broker failed (exit status 1)
          BackendError (the backends' own tree: RetryableError, PermanentError, ...),
          ProcessError (a local process or embedded service), JudgeError, NoTokensError

Each class is defined beside the code that raises it and derives from one of the two; most keep the
builtin they derived from before (`class ConfigError(UserError, ValueError)`), so an `except
ValueError` or a pydantic validator that relies on it keeps working. A message is one line per
problem and names the file and line, or the field, it is about: the CLI prints it as it is, after
`error: `, and never looks at its text to decide anything.

This module imports nothing from Herd, so any module may import it, and `herd --help` pays nothing.
"""

from __future__ import annotations


class HerdError(Exception):
    """Anything Herd raises on purpose; never raised itself, only its two kinds below."""


class UserError(HerdError):
    """Input, configuration or usage the user can fix: `herd` prints the message and exits 2."""


class ServiceError(HerdError):
    """A service Herd depends on failed (model endpoint, database, broker, a local process):
    `herd` prints the message and exits 1."""
