"""Input taken wrongly: every problem is one `file:line: reason` error with nothing written, and the
same .txt/.md files get the same keys however their path is spelled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from herd.input_errors import InputError
from herd.jobs.documents import InputFile, expand, read
from tests.support.harness import REPO

# Deeper than any interpreter stack: json's parser recurses once per level of `[[[[...`.
DEEP = '{"id": "b", "text": "x", "f": ' + "[" * 100_000 + "]" * 100_000 + "}\n"


def records(path: Path, text_column: str = "text") -> list:  # type: ignore[type-arg]
    return list(read(expand([str(path)]), text_column=text_column))


def refused(path: Path, content: bytes | str) -> str:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(InputError) as info:
        records(path)
    return str(info.value)


def test_a_csv_row_with_more_or_fewer_fields_than_the_header(tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    message = refused(csv, "id,text\nr1,fine\nr2,has, an unquoted comma\n")
    assert message == f"{csv}:3: row has 3 fields, the header has 2 (an unquoted comma or quote in the text?)"
    assert refused(csv, "id,text,lang\nr1,has, an unquoted comma,en\n").startswith(
        f"{csv}:2: row has 4 fields"
    )
    assert refused(csv, "id,text,lang\nr1,short\n").startswith(f"{csv}:2: row has 2 fields, the header has 3")
    assert (
        refused(csv, "id,text,text\nr1,a,b\n")
        == f"{csv}:1: column(s) ['text'] appear more than once in the header"
    )
    # Quoted commas and newlines, blank lines and a spreadsheet's byte order mark are fine.
    csv.write_bytes(b'\xef\xbb\xbfid,text\nr1,"a, b\nc"\n\nr2,d\n')
    assert [(r.key, r.text, r.source) for r in records(csv)] == [
        ("r1", "a, b\nc", f"{csv}:3"),
        ("r2", "d", f"{csv}:5"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("nul.jsonl", '{"id": "n0", "text": "fine"}\n{"id": "n1", "text": "hello\\u0000world"}\n',
         ":2: text contains a NUL character (U+0000)"),
        ("nul_field.jsonl", '{"id": "n1", "text": "hi", "note": {"a": ["x\\u0000"]}}\n',
         ":1: field 'note'.a[0] contains a NUL character (U+0000)"),
        ("nul_key.jsonl", '{"id": "n1", "text": "hi", "no\\u0000te": 1}\n',
         ":1: field name 'no\\x00te' contains a NUL character (U+0000)"),
        ("surrogate.jsonl", '{"id": "s1", "text": "smile \\ud83d"}\n',
         ":1: text contains an unpaired surrogate \\ud83d (half a character)"),
        ("latin1.jsonl", b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9"}\n',
         ":2: not UTF-8 text (byte 0xe9)"),
        ("nan.jsonl", '{"id": "a", "text": "x", "score": NaN}\n',
         ":1: invalid JSON: NaN is not a JSON value"),
        ("deep.jsonl", '{"id": "a", "text": "x"}\n' + DEEP,
         ":2: JSON nested too deeply to read"),
        ("latin1.csv", b"id,text\nr1,fine\nr2,caf\xe9\n", ":3: not UTF-8 text (byte 0xe9 in the row)"),
        ("nul.csv", "id,text\nr1,a\x00b\n", ":2: text contains a NUL character (U+0000)"),
        ("latin1.txt", b"line one\ncaf\xe9\n", ":2: not UTF-8 text (byte 0xe9)"),
        ("nul.txt", "line one\nline\x00two\n", ":2: text contains a NUL character (U+0000)"),
    ],
)  # fmt: skip
def test_characters_postgres_or_utf8_cannot_hold_name_file_and_line(tmp_path, name, content, problem) -> None:
    path = tmp_path / name
    assert refused(path, content) == f"{path}{problem}"


def test_document_keys_do_not_depend_on_how_the_path_is_spelled(tmp_path: Path, monkeypatch) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.md", "sub/c.txt"):
        (docs / name).write_text(f"text of {name}\n")
    want = ["docs/a.txt", "docs/b.md", "docs/sub/c.txt"]
    monkeypatch.chdir(tmp_path)
    spellings = [
        ["docs"],
        ["./docs/"],
        [str(docs)],
        ["docs/../docs"],
        ["docs/**/*.*"],
        [str(docs / "**" / "*.*")],
    ]
    for spelling in spellings:
        assert sorted(r.key for r in read(expand(spelling))) == want, spelling
    assert [r.key for r in read(expand(["docs/a.txt", str(docs / "b.md")]))] == ["docs/a.txt", "docs/b.md"]
    monkeypatch.chdir(docs)
    assert sorted(r.key for r in read(expand(["."]))) == want
    assert sorted(r.key for r in read(expand(["*.txt", "sub"]))) == ["docs/a.txt", "sub/c.txt"]
    # A bare path (the demo's files) is keyed like a file argument.
    assert next(read([docs / "a.txt"])).key == "docs/a.txt"
    assert InputFile(Path("/x.txt"), Path("/")).key == "x.txt"


def test_submit_refuses_bad_input_in_one_line_and_writes_nothing(make_herd, db, tmp_path) -> None:
    herd = make_herd()
    bad = {
        "unquoted.csv": "id,text,lang\nr1,fine,en\nr2,has, an unquoted comma,en\n",
        "nul.jsonl": '{"id": "n1", "text": "hello\\u0000world"}\n',
        "surrogate.jsonl": '{"id": "s1", "text": "smile \\ud83d"}\n',
        # Read twice: the first line by the sniffer that tells a batch file from documents, then by
        # the reader.
        "deep_first.jsonl": DEEP,
        "deep.jsonl": '{"id": "a", "text": "x"}\n' + DEEP,
    }
    for name, content in bad.items():
        (tmp_path / name).write_text(content)
        result = herd.cli("submit", str(tmp_path / name), "--job", "bad", "--task", "qa", check=False)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().startswith(f"error: {tmp_path / name}:")
    (tmp_path / "latin1.csv").write_bytes(b"id,text\nr1,caf\xe9\n")
    result = herd.cli("submit", str(tmp_path / "latin1.csv"), "--job", "bad", "--task", "qa", check=False)
    assert result.returncode == 2 and "latin1.csv:2: not UTF-8 text" in result.stderr
    assert db.execute("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM prompts)").fetchone() == (
        0,
        0,
    )


def test_resubmitting_a_folder_by_another_spelling_adds_nothing(make_herd, db, tmp_path) -> None:
    herd = make_herd()
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.txt").write_text(f"document {i}\n")

    def submit(cwd: Path, path: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "herd", "submit", path, "--job", "nightly", "--task", "qa"],
            env={**herd.env, "PYTHONPATH": str(REPO)},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stderr

    assert "added 3 new prompts" in submit(tmp_path, "docs")
    for cwd, path in [(tmp_path, str(docs)), (docs, "."), (tmp_path, "docs/*.txt"), (REPO, str(docs) + "/")]:
        assert "added 0 new prompts" in submit(cwd, path), (cwd, path)
    keys = [k for (k,) in db.execute("SELECT doc_key FROM prompts ORDER BY doc_key")]
    assert keys == ["docs/d0.txt", "docs/d1.txt", "docs/d2.txt"]
