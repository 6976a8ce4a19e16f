"""Herd file validation: every error names the file, line and key."""

from pathlib import Path

import pytest

from herd.herdfile.model import ConfigError, load_herd

GOOD = """\
models:
  small:
    protocol: openai
    endpoints: http://127.0.0.1:1/v1
    escalation: {next: medium, threshold: 0.4}
  medium:
    protocol: tgi
    endpoints: [http://127.0.0.1:2]
    prompt_mode: completion
    escalation: {next: large, measure: mean_entropy, threshold: 1.5}
  large:
    protocol: openai
    endpoints: http://127.0.0.1:3/v1
tasks:
  sentiment:
    kind: classify
    labels: [positive, negative]
    completion: "Review: {text}\\nSentiment:"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "herd.yaml"
    path.write_text(text)
    return path


def test_good_file_resolves_the_route(tmp_path: Path) -> None:
    herd = load_herd(write(tmp_path, GOOD))
    route = herd.route("sentiment")
    assert [s.model for s in route] == ["small", "medium", "large"]
    assert [s.prompt_mode for s in route] == ["chat", "completion", "chat"]
    assert route[0].escalates(0.39) and not route[0].escalates(0.41)  # margin: low escalates
    assert route[1].escalates(1.6) and not route[1].escalates(1.4)  # entropy: high escalates
    assert not route[2].escalates(0.0)  # last tier keeps its answer


def test_tiers_are_computed_once_and_equal_configs_stay_equal(tmp_path: Path) -> None:
    # tier() is asked once per message in a worker, so the frozen config answers from a cache made
    # with it; the cache holds every (task, model), so it never makes two equal configs differ.
    first, second = load_herd(write(tmp_path, GOOD)), load_herd(write(tmp_path, GOOD))
    task = next(iter(first.tasks))
    answers = {model: first.tier(task, model) for model in first.models}
    assert first == second
    assert all(first.tier(task, m) is answers[m] for m in first.models)  # the same object: cached
    assert all(second.tier(task, m) == answers[m] for m in second.models)


def test_wrong_type_names_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("threshold: 0.4", "threshold: lots"))
    with pytest.raises(ConfigError, match=r"herd.yaml:5: models.small.escalation.threshold: .*number"):
        load_herd(path)


def test_unknown_next_model(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("next: large", "next: huge"))
    with pytest.raises(ConfigError, match=r":10: models.medium.escalation.next: unknown model 'huge'"):
        load_herd(path)


def test_cycle_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    endpoints: http://127.0.0.1:3/v1\n",
        "    endpoints: http://127.0.0.1:3/v1\n    escalation: {next: small, threshold: 0.1}\n",
    )
    text = text.replace("models:\n", "entry: small\nmodels:\n")
    with pytest.raises(ConfigError, match=r"escalation cycle: small -> medium -> large -> small"):
        load_herd(write(tmp_path, text))


def test_unknown_key_and_duplicate_key(tmp_path: Path) -> None:
    # A misspelt key is one mistake: one line at the key as written, naming the key it should be
    # (not a second line for the "missing" key it was meant to be).
    with pytest.raises(ConfigError) as info:
        load_herd(write(tmp_path, GOOD.replace("    endpoints: http://127.0.0.1:1/v1", "    endpoint: x")))
    assert str(info.value).endswith(":4: models.small.endpoint: unknown key; did you mean `endpoints`?")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r":5: models.small.colour: unknown key$"):
        load_herd(
            write(
                tmp_path,
                GOOD.replace(
                    "    endpoints: http://127.0.0.1:1/v1\n",
                    "    endpoints: http://127.0.0.1:1/v1\n    colour: red\n",
                    1,
                ),
            )
        )
    dup = GOOD.replace("  medium:\n", "  small:\n", 1)
    with pytest.raises(ConfigError, match=r":6: duplicate key 'small'"):
        load_herd(write(tmp_path, dup))


def test_completion_mode_needs_a_completion_template(tmp_path: Path) -> None:
    text = GOOD.replace('    completion: "Review: {text}\\nSentiment:"\n', "")
    with pytest.raises(
        ConfigError, match=r"tasks.sentiment: model 'medium' runs this task in completion mode"
    ):
        load_herd(write(tmp_path, text))


def test_tgi_cannot_take_chat_prompts(tmp_path: Path) -> None:
    text = GOOD.replace("    prompt_mode: completion\n", "")
    with pytest.raises(ConfigError, match=r"models.medium.prompt_mode: TGI's /generate takes plain text"):
        load_herd(write(tmp_path, text))


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"herd.yaml:3: invalid YAML"):
        load_herd(write(tmp_path, "models:\n  - [unclosed\n"))
    with pytest.raises(ConfigError, match="cannot read herd file"):
        load_herd(tmp_path / "nope.yaml")


def test_classify_needs_labels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":17: tasks.sentiment.labels: a classify task needs"):
        load_herd(write(tmp_path, GOOD.replace("[positive, negative]", "[positive]")))
