"""`herd serve`: the OpenAI Files and Batches API over Herd's ledger (docs/batch-api.md).

`app.py` is the ASGI app (Starlette) and its routes; `keys.py` the bearer keys; `store.py` where file
bytes live; `files.py` and `batches.py` the API's records; `keeper.py` moves batches through their
lifecycle; `errors.py` OpenAI's error shape; `server.py` runs it all under uvicorn.
"""
