"""Train a router on calibration data: per model, logistic regression for P(answer is good | prompt).

Good = the model's deciding attempt succeeded and scored at or above `cut` (default 0.5, the
scorer's pass mark for 0/1 scorers), i.e. `ModelArrays.effective_score(cut)`. A prompt on which a
routed model gave no answer (an error, a cut-off answer: `CalibrationData.answered`) is left out of
training: it is neither good nor bad. Features are TF-IDF (fitted on the train prompts only) or the
offline sentence encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from herd.policy.calibrate import split
from herd.policy.data import CalibrationData
from herd.policy.router.encoder import MiniLMEncoder
from herd.policy.router.model import Router, RouterError
from herd.policy.router.tfidf import Tfidf, fit_tfidf

Features = Literal["tfidf", "tfidf-char", "minilm"]
FEATURES: tuple[str, ...] = ("tfidf", "tfidf-char", "minilm")


def good_labels(data: CalibrationData, models: Sequence[str], cut: float = 0.5) -> np.ndarray:
    """(n, k) bool: model j's answer on prompt i is good (ok and score >= cut).

    Raises RouterError naming an unknown model and the models the data has."""
    unknown = [m for m in models if m not in data.plain]
    if unknown:
        raise RouterError(f"unknown model(s) {unknown}: the calibration data has {data.models}")
    return np.column_stack([data.plain[m].effective_score(cut) >= 1.0 for m in models])


def train_router(
    texts: Sequence[str],
    data: CalibrationData,
    models: Sequence[str] | None = None,
    rows: np.ndarray | None = None,
    cut: float = 0.5,
    tau: float = 0.5,
    features: Features = "tfidf",
    C: float = 1.0,
    class_weight: str | None = "balanced",
    encoder: Any = None,
) -> Router:
    """Fit the router on `rows` (default all) of `data`; `texts[i]` is the prompt of data row i.

    Per model m (default: every model of the data, in its order) a scikit-learn LogisticRegression
    (L2, inverse strength `C`, `class_weight`) on good(m) = score >= `cut`; the router's cost of m is
    its mean attributed cost per prompt (USD) over the train rows. `features`: "tfidf" (word 1-2-grams,
    sublinear tf), "tfidf-char" (char_wb 2-4-grams) or "minilm" (the offline encoder; `encoder`
    overrides the built-in one, e.g. in tests).

    Rows on which a routed model gave no answer are left out. Raises RouterError: texts not aligned
    with the data, no train prompts, an unknown model, or a model
    whose train answers are all good or all bad (named, with the class).
    """
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - scikit-learn only to fit, never to load a router

    if len(texts) != data.n:
        raise RouterError(f"{len(texts)} prompt texts for {data.n} calibration rows; they must align")
    models = list(models) if models is not None else data.models
    if not models:
        raise RouterError("no models to route between")
    labels = good_labels(data, models, cut)
    rows = np.arange(data.n) if rows is None else np.asarray(rows)
    answered = rows[data.answered(models)[rows]]
    if answered.size == 0:
        why = f" ({rows.size} left out: a routed model gave no answer)" if rows.size else ""
        raise RouterError(f"no prompts to train the router on{why}")
    rows = answered
    if features not in FEATURES:
        raise RouterError(f"unknown features {features!r} (one of {', '.join(FEATURES)})")
    y = labels[rows]
    for j, m in enumerate(models):
        if y[:, j].all() or not y[:, j].any():
            kind = "good" if y[:, j].all() else "bad"
            raise RouterError(
                f"model {m!r}: all {len(rows)} train answers are {kind} "
                f"(score {'>=' if kind == 'good' else '<'}"
                f" {cut}); a router needs both good and bad answers per model"
            )
    train_texts = [texts[int(i)] for i in rows]
    tfidf: Tfidf | None = None
    encoder_name: str | None = None
    if features == "minilm":
        if encoder is None:
            encoder = MiniLMEncoder()
        x: Any = encoder.encode(train_texts)
        encoder_name = str(encoder.name)
    else:
        try:
            tfidf = fit_tfidf(
                train_texts, *(("char_wb", (2, 4)) if features == "tfidf-char" else ("word", (1, 2)))
            )
        except ValueError as exc:
            raise RouterError(f"the train prompts give no TF-IDF terms: {exc}") from None
        x = tfidf.transform(train_texts)
    coef = np.zeros((len(models), x.shape[1]))
    intercept = np.zeros(len(models))
    for j in range(len(models)):
        clf = LogisticRegression(C=C, class_weight=class_weight, max_iter=2000)
        clf.fit(x, y[:, j])
        coef[j], intercept[j] = clf.coef_[0], clf.intercept_[0]
    cost = np.array([data.plain[m].cost_usd[rows].mean() for m in models])
    info = {"n_train": int(rows.size), "C": C, "class_weight": class_weight, "features": features}
    return Router(data.task, tuple(models), cost, coef, intercept, tau, cut, tfidf, encoder_name, info)


def train_held_out(
    texts: Sequence[str], data: CalibrationData, train_fraction: float = 0.7, seed: int = 0, **kwargs: Any
) -> tuple[Router, np.ndarray, np.ndarray]:
    """Seeded split with herd.policy.calibrate.split (the same rows `herd calibrate` uses for the same
    n, fraction and seed), then `train_router` on the train rows. Returns (router, train, held_out)."""
    train_rows, held_rows = split(data.n, train_fraction, seed)
    return train_router(texts, data, rows=train_rows, **kwargs), train_rows, held_rows
