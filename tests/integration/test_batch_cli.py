"""`herd submit` and `herd export` of OpenAI batch files, driven like a user: real CLI processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openai.types.chat import ChatCompletion

from herd.local.demo.run import batch_api_hint
from tests.support.harness import chat_herd_yaml, wait_for


def line(custom_id: str, content: str, model: str = "herd", **body: Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def test_a_batch_file_is_recognised_submitted_and_exported(make_herd, double, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    double.script([{"match": "fails", "errors": [400] * 10}], default={"first": [0.95, 0.01], "text": "Yes."})
    herd = make_herd(chat_herd_yaml(double))
    herd.start_worker("small")
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join([line("a", "ok"), line("b", "fails"), line("c", "ok")]) + "\n")
    submitted = herd.cli("submit", str(path), "--job", "j")
    assert "job j: read 3 requests, added 3 new prompts" in submitted.stderr
    assert (
        "added 0 new prompts" in herd.cli("submit", str(path), "--job", "j").stderr
    )  # resubmitting adds nothing
    assert wait_for(db, "j") == {"done": 2, "failed": 1}
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    exported = herd.cli("export", "j", "--format", "openai-batch", "-o", str(out), "--errors", str(err))
    assert "exported 2 answers and 1 failed request" in exported.stderr
    assert [json.loads(raw)["custom_id"] for raw in out.read_text().splitlines()] == ["a", "c"]
    for raw in out.read_text().splitlines():
        assert (
            ChatCompletion.model_validate(json.loads(raw)["response"]["body"]).choices[0].message.content
            == "Yes."
        )
    assert json.loads(err.read_text())["error"]["code"] == "request_failed"
    # Without --errors, the failures are counted and the user told where they would go.
    alone = herd.cli("export", "j", "--format", "openai-batch", "-o", str(tmp_path / "only.jsonl"))
    assert "(not written: give --errors FILE)" in alone.stderr


def test_a_bad_batch_file_stores_nothing_and_names_every_bad_line(make_herd, double, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    herd = make_herd(chat_herd_yaml(double))
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join([line("a", "x"), line("b", "x", model="gpt-9"), line("c", "x", n=2)]) + "\n")
    failed = herd.cli("submit", str(path), "--job", "j", check=False)
    assert failed.returncode == 2
    assert f"{path}:2: body.model: model 'gpt-9' is not served by this herd" in failed.stderr
    assert f"{path}:3: body.n: Herd returns one answer per request" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    with_task = herd.cli("submit", str(path), "--job", "j", "--task", "qa", check=False)
    assert with_task.returncode == 2 and "takes no --task" in with_task.stderr
    wrong = herd.cli("export", "nope", "--errors", str(tmp_path / "e.jsonl"), check=False)
    assert wrong.returncode == 2 and "--errors is for --format openai-batch" in wrong.stderr


def test_the_demos_two_lines_are_commands_herd_has(make_herd, double, tmp_path) -> None:  # type: ignore[no-untyped-def]
    herd = make_herd(chat_herd_yaml(double))
    keys, serve = batch_api_hint(Path("/home/me/.local/share/herd/local/herd.yaml"))
    assert keys.split("#")[0].split() == ["herd", "keys", "create", "--owner", "me"]
    assert serve.split("#")[0].split() == [
        "herd",
        "--herd-file",
        "/home/me/.local/share/herd/local/herd.yaml",
        "serve",
    ]
    assert herd.cli("keys", "create", "--help").returncode == 0
    assert "OpenAI SDK" in herd.cli("serve", "--help").stdout
