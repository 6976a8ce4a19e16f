"""A herd of N models with a calibration job and a live job written straight into the ledger.

No worker and no endpoint: the rows are what workers would have written, generated with numpy
(seeded) and loaded with COPY, so a benchmark can time the commands that read them (`herd replay
--sweep`, `herd calibrate`, `herd router train/eval`, `herd report`) at the size users run them.

Shape (every figure seeded):
- models `m0` .. `m{N-1}`: skills evenly from -0.5 to 2.5 (a 1B model to a frontier one), each on one
  endpoint with 1 to 8 GPUs at $0.8 to $4 per GPU-hour; each escalates to the next when its
  first-token margin is under 0.5 (the herd file's cascade);
- prompt i has a difficulty d_i ~ N(0, 1) and a topic (one of 12, whose words are in its text and
  which shifts its difficulty, so a router has something to learn); model m answers it correctly
  with probability sigmoid(1.5 (skill_m - d_i)); a correct answer is the prompt's reference;
- measures: margin = sigmoid(2 (skill - d) + 1.5 noise) in (0, 1), the entropies and NLL falling
  with it, so confidence is informative but imperfect;
- busy seconds grow with the model's size; each endpoint serves one request at a time;
- calibration job: every model answers every prompt; live job: the herd file's cascade from m0;
  scorer `exact`: 1 when the answer is the reference, else 0, on every attempt of both jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

SCORER = "exact"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPICS = 12
_COLUMNS = (
    "prompt_id",
    "model",
    "stage",
    "round",
    "status",
    "answer",
    "prompt_tokens",
    "generated_tokens",
    "first_token_margin",
    "mean_entropy",
    "max_entropy",
    "mean_nll",
    "escalated",
    "endpoint",
    "latency_s",
    "busy_s",
    "gpu_count",
    "usd_per_gpu_hour",
    "started_at",
    "finished_at",
    "finish_reason",
)


@dataclass(frozen=True)
class Herd:
    """N models, cheapest and weakest first; arrays of shape (N,)."""

    names: tuple[str, ...]
    skills: np.ndarray
    gpus: np.ndarray
    usd_per_gpu_hour: np.ndarray
    busy_s: np.ndarray

    @classmethod
    def of(cls, n: int) -> Herd:
        size = np.linspace(0.0, 1.0, n)
        return cls(
            tuple(f"m{i}" for i in range(n)),
            np.linspace(-0.5, 2.5, n),
            np.round(2.0 ** (3 * size)).astype(int),  # 1 .. 8 GPUs
            np.round(0.8 + 3.2 * size, 2),
            0.05 + 1.5 * size**2,  # seconds per answer
        )

    def yaml(self, task: str = "qa") -> str:
        """The herd file: one OpenAI endpoint per model (never called), m_i escalating to m_{i+1}."""
        lines = ["models:"]
        for i, name in enumerate(self.names):
            lines += [
                f"  {name}:",
                "    protocol: openai",
                f"    endpoints: http://127.0.0.1:9/m/{name}/v1",
                f"    gpus: {{type: A100, count: {self.gpus[i]}, usd_per_hour: {self.usd_per_gpu_hour[i]}}}",
            ]
            if i + 1 < len(self.names):
                rule = f"next: {self.names[i + 1]}, measure: first_token_margin, threshold: 0.5"
                lines.append(f"    escalation: {{{rule}}}")
        lines += ["tasks:", f"  {task}:", "    kind: qa", '    completion: "Q: {text}\\nA:"', ""]
        return "\n".join(lines)


@dataclass(frozen=True)
class Outcomes:
    """Every model on every prompt: (n, N) arrays."""

    correct: np.ndarray
    margin: np.ndarray
    mean_entropy: np.ndarray
    max_entropy: np.ndarray
    mean_nll: np.ndarray


def outcomes(herd: Herd, difficulty: np.ndarray, rng: np.random.Generator) -> Outcomes:
    n, m = len(difficulty), len(herd.names)
    gap = herd.skills[None, :] - difficulty[:, None]
    correct = rng.random((n, m)) < 1 / (1 + np.exp(-1.5 * gap))
    margin = 1 / (1 + np.exp(-(2 * gap + 1.5 * rng.standard_normal((n, m)))))
    mean_entropy = np.clip(1.2 * (1 - margin) + 0.2 * rng.random((n, m)), 0, None)
    return Outcomes(correct, margin, mean_entropy, mean_entropy * 2.5, 0.8 * mean_entropy)


def prompts(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Difficulties (n,) and texts: a topic's words (which shift the difficulty) and filler."""
    topic = rng.integers(0, TOPICS, n)
    difficulty = rng.standard_normal(n) + np.linspace(-1.0, 1.0, TOPICS)[topic]
    words = [f"w{k}" for k in range(200)]
    texts = [
        f"question {i} on topic{t} topic{t}x: " + " ".join(rng.choice(words, 12)) for i, t in enumerate(topic)
    ]
    return difficulty, texts


def _job(conn: psycopg.Connection, name: str, kind: str, texts: list[str]) -> list[int]:
    row = conn.execute(
        "INSERT INTO jobs (name, task, entry_model, kind) VALUES (%s, 'qa', 'm0', %s) RETURNING id",
        (name, kind),
    ).fetchone()
    assert row is not None
    job_id = int(row[0])
    with conn.cursor().copy(
        "COPY prompts (job_id, doc_key, text, reference, content_hash, state, model, finished_at) FROM STDIN"
    ) as copy:
        for i, text in enumerate(texts):
            copy.write_row((job_id, f"d{i:06d}", text, f"r{i}", f"h{i}", "done", "m0", T0))
    ids = conn.execute("SELECT id FROM prompts WHERE job_id = %s ORDER BY doc_key", (job_id,)).fetchall()
    return [int(r[0]) for r in ids]


def _attempts(
    conn: psycopg.Connection,
    herd: Herd,
    o: Outcomes,
    ids: list[int],
    steps: list[tuple[int, int, bool]],
    clock: dict[int, datetime],
) -> None:
    """COPY one answer attempt per (row, model, escalated); each endpoint serves them one after another."""
    with conn.cursor().copy(f"COPY attempts ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
        for row, j, escalated in steps:
            busy = float(herd.busy_s[j])
            started = clock.get(j, T0)
            finished = started + timedelta(seconds=busy)
            clock[j] = finished
            answer = f"r{row}" if o.correct[row, j] else f"wrong by {herd.names[j]}"
            copy.write_row(
                (
                    ids[row],
                    herd.names[j],
                    "answer",
                    0,
                    "ok",
                    answer,
                    120,
                    16,
                    float(o.margin[row, j]),
                    float(o.mean_entropy[row, j]),
                    float(o.max_entropy[row, j]),
                    float(o.mean_nll[row, j]),
                    escalated,
                    f"http://127.0.0.1:9/m/{herd.names[j]}",
                    busy + 0.02,
                    busy,
                    int(herd.gpus[j]),
                    float(herd.usd_per_gpu_hour[j]),
                    started,
                    finished,
                    "stop",
                )
            )


def load(conn: psycopg.Connection, herd: Herd, n: int, *, seed: int = 0) -> tuple[str, str]:
    """Write calibration job `cal` and live job `live` (n prompts each, different prompts) into the
    ledger, scored by SCORER; returns their names. The ledger should be empty (`harness.reset`)."""
    rng = np.random.default_rng(seed)
    clock: dict[int, datetime] = {}
    difficulty, texts = prompts(n, rng)
    o = outcomes(herd, difficulty, rng)
    ids = _job(conn, "cal", "calibration", texts)
    _attempts(conn, herd, o, ids, [(i, j, False) for i in range(n) for j in range(len(herd.names))], clock)
    difficulty, texts = prompts(n, rng)
    o = outcomes(herd, difficulty, rng)
    live_ids = _job(conn, "live", "live", [f"live {t}" for t in texts])
    steps, last = [], len(herd.names) - 1
    for i in range(n):
        j = 0
        while j < last and o.margin[i, j] < 0.5:  # the herd file's rule: escalate when margin < 0.5
            steps.append((i, j, True))
            j += 1
        steps.append((i, j, False))
    _attempts(conn, herd, o, live_ids, steps, clock)
    conn.execute(
        """INSERT INTO scores (attempt_id, scorer, score)
           SELECT a.id, %s, (a.answer = p.reference)::int
           FROM attempts a JOIN prompts p ON p.id = a.prompt_id""",
        (SCORER,),
    )
    conn.execute(
        """INSERT INTO finals (prompt_id, attempt_id, model, answer)
           SELECT a.prompt_id, a.id, a.model, a.answer FROM attempts a JOIN prompts p ON p.id = a.prompt_id
           WHERE p.job_id = (SELECT id FROM jobs WHERE name = 'live') AND NOT a.escalated"""
    )
    conn.execute("""UPDATE prompts p SET model = f.model FROM finals f WHERE f.prompt_id = p.id""")
    return "cal", "live"
