"""Daemons Herd starts on one machine and finds again later: embedded Postgres and Redis
(`servers.py`) and what every daemon shares, pid files, locks and ports (`daemons.py`).

Below everything that needs a database or a broker: `herd.urls` starts these servers when no URL is
configured, and the local model herd (herd/local/) runs its llama.cpp servers as the same daemons.
"""
