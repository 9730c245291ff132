"""Tests for voice_agent.yamlfile: strict, line-numbered YAML loading."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from voice_agent.yamlfile import (
    MAX_DEPTH,
    MAX_YAML_BYTES,
    FileError,
    Problem,
    YamlDoc,
    dotted,
    load_yaml,
    load_yaml_text,
)

DOC = """\
# a persona-like document
voice:
  engine: kokoro
  blend:
    - id: a
      weight: 0.5
    - id: b
      weight: 0.5
examples:
  - user: hi
    assistant: hello
never_say:
  - x
  - y
tags: [p, q]
"""


def only_problem(exc: pytest.ExceptionInfo[FileError]) -> Problem:
    assert len(exc.value.problems) == 1, exc.value.problems
    return exc.value.problems[0]


def rejects(text: str, file: str = "f.yaml") -> Problem:
    with pytest.raises(FileError) as exc:
        load_yaml_text(text, file)
    return only_problem(exc)


# --- data and lines ---------------------------------------------------------------------------


def test_load_yaml_text_returns_data() -> None:
    doc = load_yaml_text(DOC, "p.yaml")
    assert isinstance(doc, YamlDoc)
    assert doc.file == "p.yaml"
    assert doc.data == {
        "voice": {
            "engine": "kokoro",
            "blend": [{"id": "a", "weight": 0.5}, {"id": "b", "weight": 0.5}],
        },
        "examples": [{"user": "hi", "assistant": "hello"}],
        "never_say": ["x", "y"],
        "tags": ["p", "q"],
    }


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        ((), 2),
        (("voice",), 2),
        (("voice", "engine"), 3),
        (("voice", "blend"), 4),
        (("voice", "blend", 0), 5),
        (("voice", "blend", 0, "id"), 5),
        (("voice", "blend", 0, "weight"), 6),
        (("voice", "blend", 1), 7),
        (("voice", "blend", 1, "id"), 7),
        (("voice", "blend", 1, "weight"), 8),
        (("examples",), 9),
        (("examples", 0), 10),
        (("examples", 0, "user"), 10),
        (("examples", 0, "assistant"), 11),
        (("never_say",), 12),
        (("never_say", 0), 13),
        (("never_say", 1), 14),
        (("tags", 1), 15),
    ],
)
def test_line_of_nested_keys_and_list_items(loc: tuple[str | int, ...], line: int) -> None:
    assert load_yaml_text(DOC, "p.yaml").line_of(loc) == line


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("voice", "pitch"), 2),  # missing key -> its parent
        (("voice", "blend", 1, "speed"), 7),  # missing key of a list item -> the item
        (("voice", "blend", 5, "id"), 4),  # missing item -> the list
        (("examples", 0, "user", "deeper"), 10),
        (("nope",), 2),  # missing top-level key -> the document
        (("nope", "deeper"), 2),
    ],
)
def test_line_of_missing_key_maps_to_parent(loc: tuple[str | int, ...], line: int) -> None:
    assert load_yaml_text(DOC, "p.yaml").line_of(loc) == line


def test_empty_document_has_no_data_and_no_lines() -> None:
    doc = load_yaml_text("# only a comment\n", "e.yaml")
    assert doc.data is None
    assert doc.line_of(("a",)) is None


def test_block_scalar_value_line_is_its_key() -> None:
    doc = load_yaml_text("id: x\nprompt: |\n  one\n  two\nafter: 1\n", "f.yaml")
    assert doc.data["prompt"] == "one\ntwo\n"
    assert doc.line_of(("prompt",)) == 2
    assert doc.line_of(("after",)) == 5


# --- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("a: 1\nb: [1, 2\nc: 3\n", 3, "flow sequence expected ',' or ']', but got ':'"),
        ("a: 1\nb:\n\t- x\n", 3, "found character '\\t' that cannot start any token"),
        ("a: 1\nb: 'open\n", 3, "while scanning a quoted scalar found unexpected end of stream"),
        ("a: 1\n---\nb: 2\n", 2, "expected a single document in the stream but found another"),
    ],
)
def test_syntax_error_names_line(text: str, line: int, reason: str) -> None:
    p = rejects(text)
    assert (p.file, p.line, p.field) == ("f.yaml", line, "")
    assert p.reason.startswith("invalid YAML: ")
    assert reason in p.reason


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("x: 1\ny: &a 2\n", 2),  # an anchor alone
        ("x: 1\ny: 2\nz: *a\n", 3),  # an alias alone (undefined)
        ("x: 1\ny: &a [1]\nz: *a\n", 2),  # both: the anchor is met first
        ("x: 1\n&k key: 2\n", 2),  # an anchored key
        ("- 1\n- &a {b: 1}\n", 2),
    ],
)
def test_anchors_and_aliases_rejected(text: str, line: int) -> None:
    p = rejects(text)
    assert str(p) == f"f.yaml:{line}: invalid YAML: anchors and aliases are not allowed"


def test_billion_laughs_fails_fast() -> None:
    rows = ['lol: &l0 "lol"']
    for i in range(1, 30):  # 10**29 strings if it were expanded
        refs = ", ".join([f"*l{i - 1}"] * 10)
        rows.append(f"l{i}: &l{i} [{refs}]")
    text = "\n".join(rows) + "\n"
    assert len(text.encode()) < MAX_YAML_BYTES
    start = time.perf_counter()
    p = rejects(text, "bomb.yaml")
    assert time.perf_counter() - start < 1.0
    assert str(p) == "bomb.yaml:1: invalid YAML: anchors and aliases are not allowed"


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!python/object:os.system {}", "tag:yaml.org,2002:python/object:os.system"),
        ("!!python/object/apply:os.system [ls]", "tag:yaml.org,2002:python/object/apply:os.system"),
        ("!!python/name:os.system", "tag:yaml.org,2002:python/name:os.system"),
        ("!custom x", "!custom"),
        ("!custom {a: 1}", "!custom"),
        ("!!binary aGVsbG8=", "tag:yaml.org,2002:binary"),
        ("!!set {x, y}", "tag:yaml.org,2002:set"),
        ("!!omap [x: 1]", "tag:yaml.org,2002:omap"),
        ("!!pairs [x: 1]", "tag:yaml.org,2002:pairs"),
    ],
)
def test_non_standard_tags_rejected(value: str, tag: str) -> None:
    p = rejects(f"ok: 1\nbad: {value}\n")
    assert str(p) == f"f.yaml:2: invalid YAML: tag {tag} is not allowed"


def test_non_standard_tag_in_list_item_names_its_line() -> None:
    p = rejects("ok: 1\nitems:\n  - 1\n  - !!binary aGVsbG8=\n")
    assert (p.line, p.reason) == (4, "invalid YAML: tag tag:yaml.org,2002:binary is not allowed")


def test_standard_explicit_tags_allowed() -> None:
    doc = load_yaml_text("a: !!str 12\nb: !!int '7'\nc: !!float 1\nd: !!null ''\n", "f.yaml")
    assert doc.data == {"a": "12", "b": 7, "c": 1.0, "d": None}


KEYS_REASON = "invalid YAML: keys must be plain words (merge keys and complex keys are not allowed)"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("base: {a: 1}\nitem:\n  <<: {b: 2}\n  c: 3\n", 3),  # merge key
        ("a: 1\n? [x, y]\n: z\n", 2),  # sequence key
        ("a: 1\n? {x: 1}\n: z\n", 2),  # mapping key
        ("a: 1\n!!binary aGk=: z\n", 2),  # tagged key
    ],
)
def test_merge_and_complex_keys_rejected(text: str, line: int) -> None:
    p = rejects(text)
    assert str(p) == f"f.yaml:{line}: {KEYS_REASON}"


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "a"),
        ("top:\n  c: 2\n  d: 1\n  c: 3\n", 4, "c"),
        ("items:\n  - id: x\n    w: 1\n    id: y\n", 4, "id"),
        ("1: a\n'1': b\n", 2, "1"),  # same key once read as text
    ],
)
def test_duplicate_keys_rejected(text: str, line: int, key: str) -> None:
    p = rejects(text)
    assert str(p) == f"f.yaml:{line}: invalid YAML: duplicate key {key!r}"


# --- size, encoding, missing file -------------------------------------------------------------


def test_text_larger_than_limit_rejected() -> None:
    p = rejects("#" * (MAX_YAML_BYTES + 1), "big.yaml")
    assert str(p) == f"big.yaml: file is larger than {MAX_YAML_BYTES} bytes"
    assert p.line is None


def test_text_limit_counts_bytes_not_characters() -> None:
    text = "# " + "é" * (MAX_YAML_BYTES // 2)  # fewer characters than the limit, more bytes
    assert len(text) < MAX_YAML_BYTES < len(text.encode())
    p = rejects(text, "big.yaml")
    assert p.reason == f"file is larger than {MAX_YAML_BYTES} bytes"


def test_text_exactly_at_limit_accepted() -> None:
    assert load_yaml_text("#" * MAX_YAML_BYTES, "f.yaml").data is None


def test_file_larger_than_limit_rejected(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: 1\n" + "#" * MAX_YAML_BYTES + "\n")
    with pytest.raises(FileError) as exc:
        load_yaml(path)
    assert str(only_problem(exc)) == f"{path}: file is larger than {MAX_YAML_BYTES} bytes"


def test_load_yaml_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("a:\n  b: [1, 2]\n", encoding="utf-8")
    doc = load_yaml(path)
    assert (doc.file, doc.data, doc.line_of(("a", "b", 1))) == (str(path), {"a": {"b": [1, 2]}}, 2)


def test_file_error_from_file_names_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("a: 1\na: 2\n")
    with pytest.raises(FileError) as exc:
        load_yaml(path)
    assert str(exc.value) == f"{path}:2: invalid YAML: duplicate key 'a'"


def test_non_utf8_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: Zoë\n".encode("latin-1"))
    with pytest.raises(FileError) as exc:
        load_yaml(path)
    assert str(only_problem(exc)) == f"{path}: not UTF-8 text"
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_missing_file_names_path_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(FileError) as exc:
        load_yaml(path)
    p = only_problem(exc)
    assert str(p) == f"{path}: No such file or directory"
    assert str(exc.value) == f"{path}: No such file or directory"
    assert "Traceback" not in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


# --- dotted and Problem -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "text"),
    [
        (("voice", "blend", 0, "id"), "voice.blend[0].id"),
        (("voice",), "voice"),
        ((), ""),
        (("a", 0, 1, "b"), "a[0][1].b"),
        (("server", "port"), "server.port"),
    ],
)
def test_dotted(loc: tuple[str | int, ...], text: str) -> None:
    assert dotted(loc) == text


@pytest.mark.parametrize(
    ("problem", "text"),
    [
        (Problem("p.yaml", 3, "voice.id", "unknown voice"), "p.yaml:3: voice.id: unknown voice"),
        (Problem("p.yaml", None, "voice.id", "unknown voice"), "p.yaml: voice.id: unknown voice"),
        (Problem("p.yaml", 3, "", "invalid YAML"), "p.yaml:3: invalid YAML"),
        (Problem("p.yaml", None, "", "not UTF-8 text"), "p.yaml: not UTF-8 text"),
    ],
)
def test_problem_str(problem: Problem, text: str) -> None:
    assert str(problem) == text


def test_file_error_joins_problems_one_per_line() -> None:
    err = FileError([Problem("a.yaml", 1, "x", "bad"), Problem("a.yaml", None, "", "worse")])
    assert str(err) == "a.yaml:1: x: bad\na.yaml: worse"
    assert [p.line for p in err.problems] == [1, None]


# --- property ---------------------------------------------------------------------------------

# Characters YAML gives meaning to, so that generated text often parses or nearly does.
YAML_CHARS = st.sampled_from([*"ab:-?[]{},#&*!|>'\"%@` \n\t.~", "0", "1", "2", "é", "\u2028"])


def _doc_or_file_error(text: str) -> None:
    try:
        doc = load_yaml_text(text, "h.yaml")
    except FileError as exc:
        assert exc.problems
        assert all(p.file == "h.yaml" for p in exc.problems)
        assert all(p.reason for p in exc.problems)
    else:
        assert isinstance(doc, YamlDoc)
        assert doc.file == "h.yaml"


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.text(YAML_CHARS, max_size=80))
@example("x: 1\nwhen: 2024-02-30")
@example("[" * 600 + "]" * 600)
def test_yaml_like_text_gives_doc_or_file_error(text: str) -> None:
    _doc_or_file_error(text)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.text(max_size=80))
@example("a: \x07")
@example("a: \ufffe")
@example("x: 1\nb: !!int abc")
def test_arbitrary_text_gives_doc_or_file_error(text: str) -> None:
    _doc_or_file_error(text)


# --- bad scalars, control characters, depth ---------------------------------------------------


def test_control_character_is_a_file_error() -> None:
    p = rejects("name: a\x07b\n")
    assert (p.file, p.line, p.field) == ("f.yaml", None, "")
    assert p.reason.startswith("invalid YAML: unacceptable character #x0007")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("!!int abc", "'abc' is not a valid int"),
        ("!!float abc", "'abc' is not a valid float"),
        ("!!bool abc", "'abc' is not a valid bool"),
        ("!!timestamp abc", "'abc' is not a valid timestamp"),
        ("2024-02-30", "'2024-02-30' is not a valid timestamp"),  # implicit: an impossible date
    ],
)
def test_bad_standard_scalar_is_a_file_error(value: str, reason: str) -> None:
    p = rejects(f"ok: 1\nbad: {value}\n")
    assert str(p) == f"f.yaml:2: invalid YAML: {reason}"


def test_bad_date_key_is_a_file_error() -> None:
    p = rejects("ok: 1\n2024-02-30: x\n")
    assert str(p) == "f.yaml:2: invalid YAML: '2024-02-30' is not a valid timestamp"


def test_nesting_up_to_the_limit_is_allowed() -> None:
    doc = load_yaml_text("[" * MAX_DEPTH + "]" * MAX_DEPTH, "f.yaml")
    depth, data = 0, doc.data
    while isinstance(data, list):
        depth += 1
        data = data[0] if data else None
    assert depth == MAX_DEPTH


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 600, 20_000])
def test_deep_nesting_is_a_file_error(levels: int) -> None:
    start = time.perf_counter()
    p = rejects("ok: 1\nx: " + "[" * levels + "]" * levels + "\n", "deep.yaml")
    assert time.perf_counter() - start < 1.0
    assert str(p) == f"deep.yaml:2: invalid YAML: nested deeper than {MAX_DEPTH} levels"


def test_lone_surrogate_is_a_file_error() -> None:
    p = rejects("name: a\ud800b\n")
    assert (p.file, p.field, p.reason) == ("f.yaml", "", "not valid Unicode text")
