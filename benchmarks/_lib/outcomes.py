"""Public multi-model outcome data as Herd calibration arrays: LLMRouter's routing data.

The data (ulab-uiuc/LLMRouter, MIT licence, `data/dcrouter_preprocessed/{train,test}.json` and
`data/example_data/llm_candidates/default_llm.json`): 6,108 prompts from public benchmarks (its docs
name world knowledge, MMLU/GPQA, code, maths and commonsense sets; logic-grid puzzles are there too),
each answered by the same 9 open models served by NVIDIA's API, with each answer's score (0/1 for
97% of them, a share of test cases or sub-answers otherwise), and each model's price in USD per
million input and output tokens.

What the data lacks, and the documented proxies this module puts in its place:

- **Cost per prompt**: the data has prices, not token counts. Proxy: input tokens = ceil(characters
  of the prompt / 4) (OpenAI's rule of thumb for English text) plus a fixed `output_tokens` (default
  128) per answer, times the model's prices. Every model's cost is thus its price times the same
  per-prompt length: the proxy keeps the price ratios (0.10 to 0.90 USD per million tokens here)
  and the prompts' relative lengths, not the models' different verbosity.
- **Confidence**: the data has no logprobs. Proxy: a simulated judge, as RouterBench's cascading
  router does (withmartian/routerbench `routers/run_cascading_router.py`, its `evaluator_error_rate`):
  per (prompt, model) a seeded verdict "right" (score >= 0.5) flipped with probability
  `judge_error`, reported as a confidence in [0, 1]: verdict / 2 + U(0, 1/2). It stands in Herd's
  `first_token_margin` slot (a confidence: escalate when low). `judge_error = 0.5` makes it pure
  noise, the control in which a cascade can only escalate at random.

Prompts whose text appears twice (119 appear in both files) are kept once, the first seen. Nothing
here unpickles anything: the files are JSON.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from herd.errors import UserError
from herd.policy.data import CalibrationData, ModelArrays

ENV = "HERD_BENCH_DATA"
HOW_TO_GET = (
    "get it with `git clone https://github.com/ulab-uiuc/LLMRouter` (MIT licence) and pass the clone, "
    f"or a folder holding its train.json, test.json and default_llm.json, as --data or ${ENV}"
)
# Where the files sit in a clone of ulab-uiuc/LLMRouter.
IN_CLONE = {
    "train.json": "data/dcrouter_preprocessed/train.json",
    "test.json": "data/dcrouter_preprocessed/test.json",
    "default_llm.json": "data/example_data/llm_candidates/default_llm.json",
}
CHARS_PER_TOKEN = 4
OUTPUT_TOKENS = 128
# The judge's verdict "right" takes the upper half of the confidence scale.
CORRECT_CUT = 0.5


class OutcomeDataError(UserError, ValueError):
    """The outcome data is missing or malformed; the message names the file and the item or field."""


@dataclass(frozen=True)
class Outcomes:
    """Per-prompt outcomes of `models`: `scores` (n, m) in [0, 1]; `chars` (n,) prompt lengths in
    characters; `usd_per_token` (m,) the mean of the input and output price, USD per token."""

    models: list[str]
    scores: np.ndarray
    chars: np.ndarray
    usd_per_token: np.ndarray
    source: str

    @property
    def n(self) -> int:
        return len(self.chars)

    def cost_usd(self, output_tokens: int = OUTPUT_TOKENS) -> np.ndarray:
        """(n, m) proxy cost in USD of each model answering each prompt (module docstring)."""
        tokens = np.ceil(self.chars / CHARS_PER_TOKEN) + output_tokens
        return tokens[:, None] * self.usd_per_token[None, :]

    def take(self, index: np.ndarray) -> Outcomes:
        return Outcomes(self.models, self.scores[index], self.chars[index], self.usd_per_token, self.source)


def resolve(path: str | None) -> Path:
    """The data folder: `path`, else $HERD_BENCH_DATA. Raises OutcomeDataError saying how to get it."""
    chosen = path or os.environ.get(ENV)
    if not chosen:
        raise OutcomeDataError(f"no outcome data given: {HOW_TO_GET}")
    folder = Path(chosen)
    if not folder.is_dir():
        raise OutcomeDataError(f"{folder}: not a folder; {HOW_TO_GET}")
    return folder


def _file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / IN_CLONE[name]):
        if candidate.is_file():
            return candidate
    return None


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise OutcomeDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise OutcomeDataError(f"{path}: cannot be read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise OutcomeDataError(f"{path}, line {e.lineno}: not JSON ({e.msg})") from None


def _prices(path: Path, models: list[str]) -> np.ndarray:
    table = _read_json(path)
    if not isinstance(table, dict):
        raise OutcomeDataError(f"{path}: expected an object of model name -> prices")
    out = []
    for m in models:
        entry = table.get(m)
        if not isinstance(entry, dict):
            raise OutcomeDataError(f"{path}: no prices for model {m!r}")
        prices = []
        for field in ("input_price", "output_price"):
            value = entry.get(field)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
                raise OutcomeDataError(f"{path}: {m}.{field}: expected a price >= 0, got {value!r}")
            prices.append(float(value))
        out.append(sum(prices) / 2 / 1e6)
    return np.array(out)


def load(path: str | None = None) -> Outcomes:
    """Load the outcome data from the folder `path` (else $HERD_BENCH_DATA): train.json and/or
    test.json (a list of {"question": str, "scores": {model: score in [0, 1]}}, every item with the
    same models) and default_llm.json (model -> {"input_price", "output_price"} in USD per million
    tokens), flat in the folder or where a clone of ulab-uiuc/LLMRouter has them. Raises
    OutcomeDataError naming the file and item for anything missing or malformed."""
    folder = resolve(path)
    parts = [p for p in (_file(folder, "train.json"), _file(folder, "test.json")) if p is not None]
    prices = _file(folder, "default_llm.json")
    if not parts or prices is None:
        missing = "default_llm.json" if parts else "train.json or test.json"
        raise OutcomeDataError(f"{folder}: no {missing}; {HOW_TO_GET}")
    models: list[str] | None = None
    seen: set[str] = set()
    rows: list[list[float]] = []
    chars: list[int] = []
    for part in parts:
        items = _read_json(part)
        if not isinstance(items, list):
            raise OutcomeDataError(f"{part}: expected a list of prompts")
        for i, item in enumerate(items):
            where = f"{part}: item {i}"
            question = item.get("question") if isinstance(item, dict) else None
            scores = item.get("scores") if isinstance(item, dict) else None
            if not isinstance(question, str) or not isinstance(scores, dict):
                raise OutcomeDataError(f"{where}: expected {{'question': text, 'scores': {{model: score}}}}")
            if models is None:
                models = sorted(scores)
            if sorted(scores) != models:
                raise OutcomeDataError(f"{where}: scores name {sorted(scores)}, the first item {models}")
            row = [scores[m] for m in models]
            for m, s in zip(models, row, strict=True):
                if not isinstance(s, int | float) or isinstance(s, bool) or not 0.0 <= s <= 1.0:
                    raise OutcomeDataError(f"{where}: scores.{m}: expected a score in [0, 1], got {s!r}")
            if question in seen:
                continue
            seen.add(question)
            rows.append([float(s) for s in row])
            chars.append(len(question))
    if models is None or len(models) < 2 or not rows:
        raise OutcomeDataError(f"{folder}: needs prompts answered by at least 2 models; {HOW_TO_GET}")
    return Outcomes(
        models,
        np.array(rows),
        np.array(chars, dtype=float),
        _prices(prices, models),
        ", ".join(str(p) for p in parts),
    )


def judge(scores: np.ndarray, judge_error: float, seed: int) -> np.ndarray:
    """(n, m) proxy confidence in [0, 1] (module docstring): the verdict "right" (score >= 0.5),
    flipped with probability `judge_error`, as verdict / 2 + U(0, 1/2); seeded."""
    if not 0.0 <= judge_error <= 1.0:
        raise OutcomeDataError(f"--judge-error must lie in [0, 1], got {judge_error}")
    rng = np.random.default_rng(seed)
    right = scores >= CORRECT_CUT
    verdict = right ^ (rng.random(scores.shape) < judge_error)
    return verdict * 0.5 + rng.random(scores.shape) * 0.5


def calibration_data(
    outcomes: Outcomes, confidence: np.ndarray, output_tokens: int = OUTPUT_TOKENS, task: str = "public"
) -> CalibrationData:
    """Herd's calibration arrays: per model its scores, proxy costs and the proxy `confidence`
    (n, m) as the `first_token_margin` measure; every prompt answered (`ok`)."""
    cost = outcomes.cost_usd(output_tokens)
    ok = np.ones(outcomes.n, dtype=bool)
    plain = {
        m: ModelArrays(outcomes.scores[:, j], cost[:, j], ok, {"first_token_margin": confidence[:, j]})
        for j, m in enumerate(outcomes.models)
    }
    return CalibrationData(task, np.arange(outcomes.n, dtype=np.int64), plain)


def oracle(outcomes: Outcomes, output_tokens: int = OUTPUT_TOKENS) -> tuple[float, float]:
    """The per-prompt oracle: (mean of the best score per prompt, USD per 1k prompts when each
    prompt goes to the cheapest model with that best score)."""
    best = outcomes.scores.max(axis=1)
    cost = outcomes.cost_usd(output_tokens)
    cheapest = np.where(outcomes.scores >= best[:, None], cost, math.inf).min(axis=1)
    return float(best.mean()), float(cheapest.mean() * 1000.0)
