"""`herd router train` as one call: read a calibration job, train on its train split, pick τ for a
target, evaluate on the held-out split and record a router version (docs/policy.md, "Router").

The command parses its options and prints the `Trained` this returns; nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import psycopg

from herd.herdfile.model import HerdConfig
from herd.input_errors import InputError
from herd.policy import calibration
from herd.policy.calibrate import Target, split, target_text
from herd.policy.calibration import Loaded
from herd.policy.router import versions
from herd.policy.router.evaluate import RouterEval, evaluate, figures_json
from herd.policy.router.model import Router
from herd.policy.router.tau import CachedEncoder, TauChoice, choose_tau, out_of_fold
from herd.policy.router.train import train_router


@dataclass(frozen=True)
class TrainOptions:
    """What `herd router train` was asked. `features`: "tfidf", "tfidf-char" or "minilm"; `cut`: an
    answer scoring >= cut is good; `models`: the models to route between (None: the task's route);
    `target`: picks τ on the train split (None: `tau` as given, in [0, 1]); `train_fraction` of the
    prompts train, split by `seed`; `scorer`: None, the job's first by name."""

    features: str = "tfidf"
    cut: float = 0.5
    models: list[str] | None = None
    target: Target | None = None
    tau: float = 0.5
    scorer: str | None = None
    seed: int = 0
    train_fraction: float = 0.7
    activate: bool = True
    allow_non_answers: bool = False


@dataclass(frozen=True)
class Trained:
    """A recorded router `version`: the `router` itself, the calibration data it came from (`loaded`),
    the models it routes between, the split's sizes, τ's choice on the train split (`picked`, None
    without a target; `tau_from`: "out-of-fold" or "in-sample") and its held-out evaluation (`held_out`)."""

    version: int
    router: Router
    loaded: Loaded
    models: list[str]
    n_train: int
    n_held: int
    picked: TauChoice | None
    tau_from: str | None
    held_out: RouterEval


def train_version(
    conn: psycopg.Connection, herd: HerdConfig, job: str, task: str, options: TrainOptions
) -> Trained:
    """Train, evaluate and record a router for `task` from calibration job `job`, in `conn`'s
    transaction (the caller commits). Raises InputError for a τ outside [0, 1] or a model the job
    lacks, or too many non-answers unless allowed (each before anything is written); UnknownJobError;
    UnreachableTargetError when no τ meets the target."""
    o = options
    if not 0.0 <= o.tau <= 1.0:
        raise InputError(f"--tau must lie in [0, 1] (got {o.tau})")
    loaded = calibration.load(conn, herd, job, task, o.scorer)
    loaded.check_non_answers(o.allow_non_answers, job)
    data = loaded.data
    chosen = o.models if o.models is not None else loaded.route
    unknown = [m for m in chosen if m not in data.plain]
    if unknown:
        raise InputError(f"unknown model(s) {unknown}; calibration job {job!r} has {loaded.route}")
    texts = versions.prompt_texts(conn, data.prompt_ids)
    train_rows, held_rows = split(data.n, o.train_fraction, o.seed)
    kwargs: dict[str, Any] = {"cut": o.cut, "features": o.features}
    if o.features == "minilm":
        from herd.policy.router.encoder import MiniLMEncoder  # noqa: PLC0415 - the MiniLM encoder only when asked

        kwargs["encoder"] = CachedEncoder(MiniLMEncoder())
    fitted = train_router(texts, data, models=chosen, rows=train_rows, tau=o.tau, **kwargs)
    picked, tau_from = None, None
    if o.target is not None:
        oof = out_of_fold(texts, data, train_rows, chosen, seed=o.seed, **kwargs)
        p_train = oof if oof is not None else fitted.p_good([texts[int(i)] for i in train_rows])
        picked = choose_tau(data.take(train_rows), chosen, p_train, fitted.cost_usd, o.cut, o.target)
        tau_from = "out-of-fold" if oof is not None else "in-sample"
        info = {**fitted.info, "tau_from": tau_from, "target": target_text(o.target)}
        fitted = replace(fitted, tau=picked.tau, info=info)
    ev = evaluate(fitted, [texts[int(i)] for i in held_rows], data.take(held_rows))
    figures = {
        "calibration_job": job,
        "scorer": loaded.scorer,
        "cut": o.cut,
        "seed": o.seed,
        "train_fraction": o.train_fraction,
        "train_prompt_ids": data.prompt_ids[train_rows].tolist(),
        "target": target_text(o.target) if o.target is not None else None,
        "tau": fitted.tau,
        "train": {"accuracy": picked.accuracy, "cost_per_1k_usd": picked.cost_per_1k} if picked else None,
        "held_out": figures_json(ev),
    }
    version = versions.record(conn, fitted, loaded.job_id, figures, o.activate)
    return Trained(version, fitted, loaded, chosen, len(train_rows), len(held_rows), picked, tau_from, ev)
