"""`python -m herd.local.serve MODEL`: llama.cpp's OpenAI-compatible server, in the foreground, for one
of the models shipped on PyPI (`herd.local.localherd.MODELS`).

The compose file's `cpu` profile runs this as its model servers, so a machine without a GPU serves a
real herd. It replaces itself with `python -m llama_cpp.server` (exec): the container's stop signal
reaches the server directly. The flags are `herd demo`'s (herd/local/localherd.py).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from herd.local.localherd import MODELS, server_argv
from herd.settings import get_settings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m herd.local.serve", description=__doc__)
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    gguf = MODELS[args.model].locate(get_settings().home)
    cmd = server_argv(gguf, args.host, args.port, args.threads)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
