"""The error of a document set that cannot be submitted: a leaf module, so that the readers
(herd/jobs/documents.py) and the converters they call (herd/jobs/converters.py) both raise it
without importing each other."""

from __future__ import annotations

from herd.errors import UserError


class InputError(UserError, ValueError):
    """A document set that cannot be submitted; the message names the file and line."""
