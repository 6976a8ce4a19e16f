"""The Herd router, pure core: features, training, the routing rule, JSON, evaluation.

Imports nothing from the project but herd.policy; its versions in Postgres (`versions.py`) and `herd
router train` as one call (`workflow.py`) sit beside it, and this package imports neither. See docs
in each module; the public names:
"""

from herd.policy.router.compose import RoutedReplay, replay_routed
from herd.policy.router.evaluate import (
    Curve,
    HerdFigure,
    RouterEval,
    apgr,
    cpt,
    curve,
    evaluate,
    herd_figure,
    oracle_choice,
    outcome,
    strong_weak,
)
from herd.policy.router.model import Router, RouterError, route_rule
from herd.policy.router.tfidf import Tfidf, fit_tfidf
from herd.policy.router.train import FEATURES, good_labels, train_held_out, train_router

__all__ = [
    "FEATURES",
    "Curve",
    "HerdFigure",
    "RoutedReplay",
    "Router",
    "RouterError",
    "RouterEval",
    "Tfidf",
    "apgr",
    "cpt",
    "curve",
    "evaluate",
    "fit_tfidf",
    "good_labels",
    "herd_figure",
    "oracle_choice",
    "outcome",
    "replay_routed",
    "route_rule",
    "strong_weak",
    "train_held_out",
    "train_router",
]
