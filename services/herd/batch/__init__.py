"""OpenAI batch files in and out of Herd's ledger: the line format and its checks (`format.py`), which
route a request's `body.model` names (`routes.py`), a batch file stored as a job (`submit.py`), and
the output and error files written from the ledger (`export.py`). `herd submit`/`herd export` and the
API server (herd/api/) share all four."""
