"""TF-IDF features as plain parameters: fitted with scikit-learn, applied with numpy and scipy only.

`fit_tfidf` fits sklearn's TfidfVectorizer and keeps its parameters (vocabulary in column order, idf,
analyzer settings); `Tfidf.transform` reproduces `TfidfVectorizer.transform` for those settings
(lowercase, token pattern, word or char_wb n-grams, raw or sublinear tf, idf, l2 norm) without
sklearn, so a router read from JSON needs neither sklearn nor pickle. Equality with sklearn is a test.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # sklearn's default token_pattern


@dataclass(frozen=True)
class Tfidf:
    """Fitted TF-IDF parameters. `terms[j]` is column j; `idf` (d,) float; `analyzer` "word" or
    "char_wb"; `ngram_range` inclusive; `sublinear_tf`: tf replaced by 1 + log(tf)."""

    terms: tuple[str, ...]
    idf: np.ndarray
    analyzer: str = "word"
    ngram_range: tuple[int, int] = (1, 2)
    sublinear_tf: bool = True

    def __post_init__(self) -> None:
        if self.analyzer not in ("word", "char_wb"):
            raise ValueError(f"unknown TF-IDF analyzer {self.analyzer!r} (word or char_wb)")
        if self.idf.shape != (len(self.terms),):
            raise ValueError(f"idf has shape {self.idf.shape}, expected ({len(self.terms)},)")
        object.__setattr__(self, "_index", {t: j for j, t in enumerate(self.terms)})
        object.__setattr__(self, "_token", re.compile(TOKEN_PATTERN))

    @property
    def dim(self) -> int:
        return len(self.terms)

    def _grams(self, text: str) -> list[str]:
        lo, hi = self.ngram_range
        text = text.lower()
        if self.analyzer == "word":
            tokens: list[str] = self._token.findall(text)  # type: ignore[attr-defined]
            if hi == 1:
                return tokens
            grams = tokens if lo == 1 else []
            if lo <= 2 <= hi:
                grams = grams + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
            for n in range(max(lo, 3), hi + 1):
                grams += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
            return grams
        grams = []
        for word in text.split():
            w = f" {word} "
            for n in range(lo, hi + 1):
                if n >= len(w):  # sklearn keeps the whole padded word once, then stops
                    grams.append(w)
                    break
                grams += [w[i : i + n] for i in range(len(w) - n + 1)]
        return grams

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """(n, d) CSR float64, rows l2-normalised (all-zero rows stay zero); = sklearn's transform."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        get = index.get
        indices: list[int] = []
        indptr = [0]
        for text in texts:
            indices += [j for j in map(get, self._grams(text)) if j is not None]
            indptr.append(len(indices))
        n = len(texts)
        x = sp.csr_matrix(
            (np.ones(len(indices)), np.asarray(indices, dtype=np.int32), np.asarray(indptr, dtype=np.int64)),
            shape=(n, self.dim),
        )
        x.sum_duplicates()
        if self.sublinear_tf:
            np.log(x.data, out=x.data)
            x.data += 1.0
        x.data *= self.idf[x.indices]
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        norms[norms == 0.0] = 1.0
        x.data /= np.repeat(norms, np.diff(x.indptr))
        return x

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "tfidf",
            "analyzer": self.analyzer,
            "ngram_range": list(self.ngram_range),
            "sublinear_tf": self.sublinear_tf,
            "terms": list(self.terms),
            "idf": self.idf.tolist(),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Tfidf:
        lo, hi = doc["ngram_range"]
        return cls(
            tuple(str(t) for t in doc["terms"]),
            np.asarray(doc["idf"], dtype=float),
            str(doc["analyzer"]),
            (int(lo), int(hi)),
            bool(doc["sublinear_tf"]),
        )


def fit_tfidf(
    texts: Sequence[str],
    analyzer: str = "word",
    ngram_range: tuple[int, int] = (1, 2),
    min_df: int = 1,
    max_features: int | None = 50_000,
    sublinear_tf: bool = True,
) -> Tfidf:
    """Fit sklearn's TfidfVectorizer on `texts` (the train prompts) and keep its parameters.

    Raises ValueError (sklearn's) when the texts yield no term at all.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415 - scikit-learn only to fit, never to load a router

    vec = TfidfVectorizer(
        analyzer=analyzer,
        ngram_range=ngram_range,
        min_df=min_df,
        max_features=max_features,
        sublinear_tf=sublinear_tf,
        lowercase=True,
        token_pattern=TOKEN_PATTERN,
        dtype=np.float64,
    )
    vec.fit(list(texts))
    terms = tuple(vec.get_feature_names_out().tolist())
    return Tfidf(terms, np.asarray(vec.idf_, dtype=float), analyzer, ngram_range, sublinear_tf)
