"""OpenAI's list pagination over an owner's rows: `limit` items after the item `after`, newest first
(or oldest first), and whether there are more. Keyset paging on the table's `seq`, so a page costs the
same at any depth and a row added meanwhile neither repeats nor skips one."""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
from psycopg.rows import class_row

Row = TypeVar("Row")
_LAST = 2**63 - 1  # past every seq


def keyset_page(
    conn: psycopg.Connection,
    row: type[Row],
    *,
    table: str,
    columns: str,
    owner: str,
    after: str | None,
    limit: int,
    desc: bool = True,
    source: str | None = None,
    alias: str | None = None,
    where: str = "TRUE",
    params: tuple[Any, ...] = (),
) -> tuple[list[Row], bool]:
    """(up to `limit` rows of `table`, has_more). `after`: the id of the previous page's last row; one
    the owner does not have starts at the beginning. `source`: the FROM clause when it is more than
    `table` (a join, `table` under `alias`). `where`/`params` (named p0, p1, ...): a further filter."""
    at = f"{alias}." if alias else ""
    with conn.cursor(row_factory=class_row(row)) as cur:
        cur.execute(
            f"""SELECT {columns} FROM {source or table}
                WHERE {at}owner = %(owner)s AND ({where})
                  AND {at}seq {"<" if desc else ">"} coalesce(
                      (SELECT seq FROM {table} WHERE id = %(after)s AND owner = %(owner)s), %(start)s)
                ORDER BY {at}seq {"DESC" if desc else "ASC"} LIMIT %(limit)s""",
            {
                "owner": owner,
                "after": after,
                "start": _LAST if desc else 0,
                "limit": limit + 1,
                **{f"p{i}": value for i, value in enumerate(params)},
            },
        )
        rows = cur.fetchall()
    return rows[:limit], len(rows) > limit
