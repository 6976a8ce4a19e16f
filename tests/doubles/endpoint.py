"""The endpoint double's earlier import path, `python -m tests.doubles.endpoint`: scripts written
against it (bug reproductions, notes, other checkouts) keep running. The double lives in
tests/support/endpoint.py; import it from there."""

from __future__ import annotations

import sys

from tests.support.endpoint import *  # noqa: F403 - the same public names under the old path
from tests.support.endpoint import main

if __name__ == "__main__":
    sys.exit(main())
