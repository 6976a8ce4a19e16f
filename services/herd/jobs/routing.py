"""Routing at submit: the task's active router picks each prompt's entry model as the records stream.

`herd submit` COPYs rows into its staging table as it reads them; with a router, `RoutingWriter` holds
up to `batch` rows, routes them in one vectorised call (TF-IDF transform of the batch, one sparse
matrix product for every model's logistic model, the routing rule over the (batch, k) matrix), and
writes each row with its entry model and its P(good) per model as a small JSON object. Memory stays
flat (one batch), and the router JSON is parsed once per submit.

Nothing here runs when the task has no active router: submit then behaves exactly as before.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import psycopg

from herd.herdfile.model import HerdConfig
from herd.input_errors import InputError
from herd.jobs.references import stale_router
from herd.policy.router import versions as routers
from herd.policy.router.model import Router, route_rule

BATCH = 4096  # rows per routing call: large enough to amortise numpy/scipy calls, a few MB at most
DIGITS = 4  # P(good) stored to 4 decimals: the ledger records the decision, not a float dump


def active_router(conn: psycopg.Connection, herd: HerdConfig, task: str) -> tuple[int, Router] | None:
    """The task's active (version, router), or None. InputError (one line) when the router routes to a
    model the herd file does not run for the task, since its prompts would wait on a queue nobody reads."""
    active = routers.load_active(conn, task)
    if active is None:
        return None
    version, router = active
    if router.task != task:
        raise InputError(f"the active router v{version} of task {task!r} was trained for {router.task!r}")
    stale = stale_router(herd, task, version, list(router.models))
    if stale is not None:
        raise InputError(str(stale))
    return version, router


class RoutingWriter:
    """Buffers staging rows, routes them by batch, writes them with (model, router_p_good) appended.

    `copy` is a psycopg Copy whose column list ends with `model, router_p_good`; `write(row, text)`
    takes the row without those two columns and the text to route on; `close()` flushes the rest."""

    def __init__(self, copy: Any, router: Router, batch: int = BATCH) -> None:
        self.copy = copy
        self.router = router
        self.batch = batch
        self.names = np.asarray(router.models, dtype=object)
        # One %-template per router, '{"small": %.4f, "large": %.4f}', filled per row (json.dumps per
        # row is several times slower); model names are JSON-escaped once here, their % doubled.
        self.template = (
            "{" + ", ".join(json.dumps(m).replace("%", "%%") + f": %.{DIGITS}f" for m in router.models) + "}"
        )
        self.rows: list[tuple[Any, ...]] = []
        self.texts: list[str] = []
        self.routed: dict[str, int] = {m: 0 for m in router.models}

    def write(self, row: tuple[Any, ...], text: str) -> None:
        self.rows.append(row)
        self.texts.append(text)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        p = self.router.p_good(self.texts)
        choice = route_rule(p, self.router.cost_usd, self.router.tau)  # on p: no second transform
        entries = self.names[choice]
        template = self.template
        write_row = self.copy.write_row
        for row, entry, probs in zip(self.rows, entries, p.tolist(), strict=True):
            write_row((*row, entry, template % tuple(probs)))
        for j, count in enumerate(np.bincount(choice, minlength=len(self.names)).tolist()):
            self.routed[str(self.names[j])] += count
        self.rows, self.texts = [], []

    def close(self) -> None:
        self.flush()
