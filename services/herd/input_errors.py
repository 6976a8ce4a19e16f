"""The error of input that cannot be used (a document set, a version file, a calibration job's data):
a leaf module, so that the readers (herd/jobs/documents.py), the converters they call
(herd/jobs/converters.py) and the policy and router versions below them (herd/policy/) all raise it
without importing each other."""

from __future__ import annotations

from herd.errors import UserError


class InputError(UserError, ValueError):
    """A document set that cannot be submitted; the message names the file and line."""
