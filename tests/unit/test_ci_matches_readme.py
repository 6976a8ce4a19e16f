"""`.ci/run` runs exactly the README's install and test commands, so what CI proves is what a new
user types: the install line of the first code block, and every line of the Tests section's block."""

from __future__ import annotations

import re

from tests.support.harness import REPO


def _bash_blocks(markdown: str) -> list[list[str]]:
    return [
        [line for line in block.splitlines() if line.strip()]
        for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)
    ]


def test_ci_runs_the_readmes_install_and_test_commands_verbatim() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci_lines = {line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()}
    install = _bash_blocks(readme)[0]
    assert install[0].startswith("python3 -m venv .venv") and install[1] == "herd demo"
    tests_section = readme.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    test_lines = _bash_blocks(tests_section)[0]
    assert test_lines[-1] == "pytest"
    for line in [install[0], *test_lines]:
        assert line in ci_lines, f".ci/run lacks the README's command: {line}"
