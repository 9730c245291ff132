"""Tests for voice_agent.persona (loading, validation, the store) and History.prompt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voice_agent import resources
from voice_agent.catalog import VoiceCatalog
from voice_agent.history import History
from voice_agent.persona import Example, Persona, PersonaStore, load_persona
from voice_agent.yamlfile import FileError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "personas").glob("*.yaml"))

VOICES = VoiceCatalog(
    {
        "piper": frozenset({"amy", "joe"}),
        "kokoro": frozenset({"af_a", "af_b"}),
    }
)

GOOD = """\
id: {id}
name: Test
description: A test persona.
system_prompt: Be brief.
voice:
  engine: piper
  id: amy
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, voices: VoiceCatalog | None = VOICES) -> list[str]:
    with pytest.raises(FileError) as exc:
        load_persona(path, voices)
    return [str(p) for p in exc.value.problems]


# --- shipped personas -------------------------------------------------------------------------


def test_shipped_personas_are_the_packaged_ones() -> None:
    assert SHIPPED
    assert sorted(p.name for p in resources.personas_dir().glob("*.yaml")) == [
        p.name for p in SHIPPED
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_persona_validates(path: Path) -> None:
    persona = load_persona(path)  # against the shipped voice catalog
    assert persona.id == path.stem
    assert persona.system_prompt.strip()
    assert persona.name and persona.description


def test_shipped_personas_are_distinct() -> None:
    personas = [load_persona(p) for p in SHIPPED]
    assert len(personas) >= 3
    assert len({p.id for p in personas}) == len(personas)
    manners = {
        (p.voice.engine, tuple(p.voice.voice_ids), p.voice.speed, p.turn_taking) for p in personas
    }
    assert len(manners) == len(personas)
    assert (
        len({p.voice.speed for p in personas}) >= 3 or len({p.turn_taking for p in personas}) >= 3
    )


def test_shipped_storyteller_blend_loads() -> None:
    p = load_persona(REPO / "personas" / "storyteller.yaml")
    assert p.voice.engine == "kokoro"
    assert p.voice.voice_ids == ["jm_kumo", "jf_alpha"]
    assert [m.weight for m in p.voice.blend or []] == [0.7, 0.3]


def test_valid_persona_with_custom_catalog(tmp_path: Path) -> None:
    p = load_persona(write(tmp_path / "t.yaml", GOOD.format(id="t")), VOICES)
    assert (p.id, p.name, p.voice.engine, p.voice.id, p.voice.speed) == (
        "t",
        "Test",
        "piper",
        "amy",
        1.0,
    )
    assert p.turn_taking.endpoint_silence_ms == 500


# --- errors -----------------------------------------------------------------------------------


def test_bad_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "id: t\nname: Test\ndescription: [oops\n")
    assert problems(path) == [
        f"{path}:4: invalid YAML: while parsing a flow sequence expected ',' or ']', "
        "but got '<stream end>'"
    ]


def test_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t") + "name: Again\n")
    assert problems(path) == [f"{path}:8: invalid YAML: duplicate key 'name'"]


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "just text\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "t.yaml", text)
    assert problems(path) == [f"{path}:1: a persona file must be a mapping of fields"]


def test_unknown_field(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t") + "  pitch: 3\ncolour: red\n")
    assert problems(path) == [
        f"{path}:8: voice.pitch: unknown field",
        f"{path}:9: colour: unknown field",
    ]


def test_wrong_type(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.yaml",
        GOOD.format(id="t") + "turn_taking:\n  endpoint_silence_ms: fast\n",
    )
    assert problems(path) == [
        f"{path}:9: turn_taking.endpoint_silence_ms: "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_missing_field_in_list_item(tmp_path: Path) -> None:
    text = GOOD.format(id="t") + "examples:\n  - user: hi\n    assistant: hello\n  - user: x\n"
    path = write(tmp_path / "t.yaml", text)
    assert problems(path) == [f"{path}:11: examples[1].assistant: required field is missing"]


def test_missing_required_field_points_at_the_document(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "# header\nid: t\nsystem_prompt: Hi.\n")
    assert problems(path) == [
        f"{path}:2: name: required field is missing",
        f"{path}:2: description: required field is missing",
    ]


def test_unknown_piper_voice(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t").replace("id: amy", "id: bob"))
    assert problems(path) == [
        f"{path}:7: voice.id: unknown voice 'bob' for engine piper (known: amy, joe)"
    ]


def test_unknown_voice_with_the_shipped_catalog(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t"))
    assert problems(path, voices=None) == [
        f"{path}:7: voice.id: unknown voice 'amy' for engine piper (known: joe)"
    ]


def test_default_voice_not_in_catalog_points_at_the_document(tmp_path: Path) -> None:
    text = "id: t\nname: Test\ndescription: d\nsystem_prompt: Hi.\n"  # voice: the default joe
    path = write(tmp_path / "t.yaml", text)
    custom = VoiceCatalog({"piper": frozenset({"amy"})})
    assert problems(path, custom) == [
        f"{path}:1: voice.id: unknown voice 'joe' for engine piper (known: amy)"
    ]


KOKORO = """\
id: t
name: Test
description: A test persona.
system_prompt: Be brief.
voice:
  engine: kokoro
  blend:
    - id: af_a
      weight: 0.5
    - id: zz
      weight: 0.5
"""


def test_unknown_kokoro_blend_voice(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", KOKORO)
    assert problems(path) == [
        f"{path}:10: voice.blend[1].id: unknown voice 'zz' for engine kokoro (known: af_a, af_b)"
    ]


def test_engine_without_voices_in_catalog(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", KOKORO.replace("zz", "af_b"))
    only_piper = VoiceCatalog({"piper": frozenset({"amy"})})
    assert problems(path, only_piper) == [
        f"{path}:8: voice.blend[0].id: unknown voice 'af_a' for engine kokoro (known: none)",
        f"{path}:10: voice.blend[1].id: unknown voice 'af_b' for engine kokoro (known: none)",
    ]


def test_blend_on_piper(tmp_path: Path) -> None:
    text = KOKORO.replace("engine: kokoro", "engine: piper").replace("af_a", "amy")
    path = write(tmp_path / "t.yaml", text.replace("zz", "joe"))
    assert problems(path) == [
        f"{path}:7: voice.blend: engine piper cannot blend voices; use kokoro"
    ]


def test_blend_on_piper_with_unknown_voices_sorted_by_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", KOKORO.replace("engine: kokoro", "engine: piper"))
    assert problems(path) == [
        f"{path}:7: voice.blend: engine piper cannot blend voices; use kokoro",
        f"{path}:8: voice.blend[0].id: unknown voice 'af_a' for engine piper (known: amy, joe)",
        f"{path}:10: voice.blend[1].id: unknown voice 'zz' for engine piper (known: amy, joe)",
    ]


def test_both_id_and_blend(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.yaml", KOKORO.replace("  engine: kokoro\n", "  engine: kokoro\n  id: af_a\n")
    )
    assert problems(path) == [
        f"{path}:5: voice: give either id (one voice) or blend (weighted voices), not both"
    ]


def test_neither_id_nor_blend(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t").replace("  id: amy\n", "  speed: 1.2\n"))
    assert problems(path) == [
        f"{path}:5: voice: give either id (one voice) or blend (weighted voices), not both"
    ]


@pytest.mark.parametrize("prompt", ['""', '"   "', "|\n  \n  \n"])
def test_empty_system_prompt(tmp_path: Path, prompt: str) -> None:
    text = GOOD.format(id="t").replace("system_prompt: Be brief.", f"system_prompt: {prompt}")
    path = write(tmp_path / "t.yaml", text)
    assert problems(path) == [
        f"{path}:4: system_prompt: must not be empty: it is what makes the persona"
    ]


def test_id_must_match_file_name(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "# c\n" + GOOD.format(id="other"))
    assert problems(path) == [f"{path}:2: id: must match the file name 't'"]


def test_several_problems_reported_together_sorted_by_line(tmp_path: Path) -> None:
    text = """\
colour: red
name: 5
description: ""
voice:
  engine: kokoro
  blend:
    - id: af_a
      weight: 0.5
    - id: zz
      weight: 0.5
id: other
system_prompt: "   "
turn_taking:
  endpoint_silence_ms: fast
"""
    path = write(tmp_path / "t.yaml", text)
    with pytest.raises(FileError) as exc:
        load_persona(path, VOICES)
    got = [(p.line, p.field) for p in exc.value.problems]
    assert got == [
        (1, "colour"),
        (2, "name"),
        (3, "description"),
        (9, "voice.blend[1].id"),
        (11, "id"),
        (12, "system_prompt"),
        (14, "turn_taking.endpoint_silence_ms"),
    ]
    assert str(exc.value).splitlines()[3] == (
        f"{path}:9: voice.blend[1].id: unknown voice 'zz' for engine kokoro (known: af_a, af_b)"
    )
    assert all(p.file == str(path) for p in exc.value.problems)


def test_nothing_is_half_loaded(tmp_path: Path) -> None:
    # valid for pydantic, refused only by the voice catalog: still no persona comes back
    path = write(tmp_path / "t.yaml", GOOD.format(id="t").replace("id: amy", "id: bob"))
    result = None
    with pytest.raises(FileError):
        result = load_persona(path, VOICES)
    assert result is None


# --- PersonaStore -----------------------------------------------------------------------------


def touch_later(path: Path, text: str) -> None:
    """Rewrite a file and move its mtime forward, so a change is seen whatever the clock."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


BUILT_IN = sorted(p.stem for p in SHIPPED)


def test_store_builtins_only() -> None:
    store = PersonaStore(
        voices=VoiceCatalog(
            {"piper": frozenset({"joe"}), "kokoro": frozenset({"jm_kumo", "jf_alpha"})}
        )
    )
    assert store.ids() == BUILT_IN
    assert store.get("concierge").name == "Ada"


def test_store_user_dir_on_top_of_builtins(tmp_path: Path) -> None:
    write(tmp_path / "mine.yaml", GOOD.format(id="mine"))
    store = PersonaStore(dirs=[tmp_path], voices=None)
    with pytest.raises(FileError):  # 'amy' is not a shipped piper voice
        store.get("mine")
    store = PersonaStore(
        dirs=[tmp_path],
        voices=VoiceCatalog(
            {"piper": frozenset({"amy", "joe"}), "kokoro": frozenset({"jm_kumo", "jf_alpha"})}
        ),
    )
    assert store.ids() == sorted([*BUILT_IN, "mine"])
    assert store.get("mine").name == "Test"
    assert store.get("tutor").name == "Professor Lin"


def test_user_persona_replaces_builtin(tmp_path: Path) -> None:
    write(tmp_path / "concierge.yaml", GOOD.format(id="concierge").replace("Test", "Mine"))
    store = PersonaStore(dirs=[tmp_path], voices=VOICES)
    assert store.ids() == BUILT_IN
    assert store.get("concierge").name == "Mine"
    status = {pid: path for pid, path, _, _ in store.status()}
    assert status["concierge"] == tmp_path / "concierge.yaml"


def test_edit_takes_effect_on_next_get(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t"))
    store = PersonaStore(dirs=[tmp_path], voices=VOICES)
    assert store.get("t").name == "Test"
    touch_later(path, GOOD.format(id="t").replace("name: Test", "name: Edited"))
    assert store.get("t").name == "Edited"


def test_edit_same_size_is_seen_by_mtime(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t"))
    store = PersonaStore(dirs=[tmp_path], voices=VOICES)
    assert store.get("t").name == "Test"
    touch_later(path, GOOD.format(id="t").replace("name: Test", "name: Tess"))
    assert store.get("t").name == "Tess"


def test_broken_edit_keeps_last_good_version(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t"))
    store = PersonaStore(dirs=[tmp_path], voices=VOICES)
    good = store.get("t")
    touch_later(path, GOOD.format(id="t") + "colour: red\n")
    assert store.get("t") is good
    ((pid, where, in_service, error),) = [s for s in store.status() if s[0] == "t"]
    assert (pid, where, in_service) == ("t", path, good)
    assert error is not None
    assert [str(p) for p in error.problems] == [f"{path}:8: colour: unknown field"]
    # fixing it clears the error and serves the new version
    touch_later(path, GOOD.format(id="t").replace("name: Test", "name: Fixed"))
    assert store.get("t").name == "Fixed"
    assert [s[3] for s in store.status() if s[0] == "t"] == [None]


def test_persona_broken_from_the_start(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t").replace("id: amy", "id: bob"))
    store = PersonaStore(dirs=[tmp_path], voices=VOICES)
    with pytest.raises(FileError) as exc:
        store.get("t")
    assert [str(p) for p in exc.value.problems] == [
        f"{path}:7: voice.id: unknown voice 'bob' for engine piper (known: amy, joe)"
    ]
    ((_, _, in_service, error),) = [s for s in store.status() if s[0] == "t"]
    assert in_service is None
    assert error is not None and str(error) == str(exc.value)


def test_unknown_id_lists_known_ids(tmp_path: Path) -> None:
    write(tmp_path / "mine.yaml", GOOD.format(id="mine"))
    store = PersonaStore(dirs=[tmp_path], voices=VOICES)
    with pytest.raises(KeyError) as exc:
        store.get("nobody")
    known = ", ".join(sorted([*BUILT_IN, "mine"]))
    assert exc.value.args[0] == f"unknown persona 'nobody'; known: {known}"


def test_missing_user_dir_is_ignored(tmp_path: Path) -> None:
    store = PersonaStore(dirs=[tmp_path / "absent"], voices=VOICES)
    assert store.ids() == BUILT_IN


def test_new_file_appears_without_a_new_store(tmp_path: Path) -> None:
    store = PersonaStore(dirs=[tmp_path], voices=VOICES)
    assert "late" not in store.ids()
    write(tmp_path / "late.yaml", GOOD.format(id="late"))
    assert "late" in store.ids()
    assert store.get("late").id == "late"


def test_edit_with_control_character_keeps_last_good_version(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GOOD.format(id="t"))
    store = PersonaStore(dirs=[tmp_path], voices=VOICES)
    good = store.get("t")
    touch_later(path, GOOD.format(id="t").replace("Be brief.", "Be \x07brief."))
    assert store.get("t") is good
    ((_, _, in_service, error),) = [s for s in store.status() if s[0] == "t"]
    assert in_service is good
    assert error is not None and len(error.problems) == 1
    assert error.problems[0].file == str(path)
    assert error.problems[0].reason.startswith("invalid YAML: unacceptable character #x0007")


# --- History.prompt ---------------------------------------------------------------------------


def one_token(_: str) -> int:
    return 1  # every message then costs 1 + 4 = 5


def make_persona(**kw: object) -> Persona:
    fields: dict[str, object] = {
        "id": "t",
        "name": "T",
        "description": "d",
        "system_prompt": "  Be brief.  ",
        "never_say": ["um", "like"],
        "examples": [Example(user="hi", assistant="hello")],
    }
    fields.update(kw)
    return Persona.model_validate(fields)


def conversation() -> History:
    h = History()
    h.add_user("u1")
    h.add_assistant("a1")
    h.add_user("u2")
    h.add_assistant("a2")
    h.add_user("u3")
    return h


HEAD = [
    {"role": "system", "content": "Be brief.\nNever say: um; like."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
]


def contents(msgs: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in msgs[len(HEAD) :]]


def test_prompt_head_is_system_then_examples() -> None:
    msgs = conversation().prompt(make_persona(), budget_tokens=10_000, count=one_token)
    assert msgs[:3] == HEAD
    assert contents(msgs) == ["u1", "a1", "u2", "a2", "u3"]
    assert [m["role"] for m in msgs[3:]] == ["user", "assistant", "user", "assistant", "user"]


def test_prompt_without_never_say_or_examples() -> None:
    p = make_persona(never_say=[], examples=[])
    msgs = conversation().prompt(p, budget_tokens=10_000, count=one_token)
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[1] == {"role": "user", "content": "u1"}


@pytest.mark.parametrize(
    ("room", "tail"),
    [
        (1, ["u3"]),  # u3 fits
        (2, ["u3"]),  # a2 u3 fit, but the tail must not start with the assistant
        (3, ["u2", "a2", "u3"]),
        (4, ["u2", "a2", "u3"]),  # a1 dropped from the front
        (5, ["u1", "a1", "u2", "a2", "u3"]),
    ],
)
def test_prompt_keeps_the_most_recent_history_that_fits(room: int, tail: list[str]) -> None:
    budget = 5 * len(HEAD) + 5 * room
    msgs = conversation().prompt(make_persona(), budget_tokens=budget, count=one_token)
    assert msgs[:3] == HEAD
    assert contents(msgs) == tail
    assert msgs[3]["role"] == "user"


def test_prompt_stops_at_the_first_message_that_does_not_fit() -> None:
    h = History()
    h.add_user("old short")
    h.add_assistant("x " * 200)  # too big
    h.add_user("new")
    msgs = h.prompt(
        make_persona(), budget_tokens=5 * len(HEAD) + 20, count=lambda s: len(s.split())
    )
    assert contents(msgs) == ["new"]


def test_prompt_keeps_the_newest_user_message_even_over_budget() -> None:
    msgs = conversation().prompt(make_persona(), budget_tokens=0, count=one_token)
    assert msgs[:3] == HEAD
    assert contents(msgs) == ["u3"]


def test_prompt_tail_cut_short_starts_with_the_user_but_a_greeting_is_kept() -> None:
    h = History()
    h.add_assistant("greeting")
    h.add_user("q")
    h.add_assistant("answer")
    for budget in range(0, 60):
        msgs = h.prompt(make_persona(), budget_tokens=budget, count=one_token)
        tail = msgs[len(HEAD) :]
        assert not tail or tail[0]["role"] == "user" or len(tail) == 3
    whole = h.prompt(make_persona(), 10_000, count=one_token)
    assert contents(whole) == ["greeting", "q", "answer"]  # what "q" answers
    only_assistant = History()
    only_assistant.add_assistant("hello there")
    assert contents(only_assistant.prompt(make_persona(), 10_000, count=one_token)) == [
        "hello there"
    ]
