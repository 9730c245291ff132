"""Tests for voice_agent.config: layered settings and errors that name their source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from voice_agent.config import (
    CONFIG_ENV,
    ServerSettings,
    Settings,
    load_settings,
    parse_assignment,
    settings_as_yaml,
)
from voice_agent.yamlfile import FileError

REPO = Path(__file__).resolve().parents[1]

PORT_NOT_INT = "Input should be a valid integer, unable to parse string as an integer"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    """Write a file; return it relative to the cwd, as a user would name it."""
    path.write_text(text, encoding="utf-8")
    return path.relative_to(Path.cwd()) if path.parent == Path.cwd() else path


def errors(exc: pytest.ExceptionInfo[FileError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_without_config_file(in_tmp: Path) -> None:
    assert not (in_tmp / "config.yaml").exists()
    s = load_settings(env={})
    assert s == Settings()
    assert s.server.port == 8080
    assert s.personas.default == "concierge"


def test_empty_config_file_gives_defaults(in_tmp: Path) -> None:
    write(in_tmp / "config.yaml", "# nothing set\n")
    assert load_settings(env={}) == Settings()


def test_repo_config_yaml_is_the_defaults(in_tmp: Path) -> None:
    assert load_settings(REPO / "config.yaml", env={}) == Settings()


# --- which file -------------------------------------------------------------------------------


def test_local_config_yaml_is_read(in_tmp: Path) -> None:
    write(in_tmp / "config.yaml", "server:\n  port: 7001\n")
    assert load_settings(env={}).server.port == 7001


def test_config_env_var_selects_the_file(in_tmp: Path) -> None:
    write(in_tmp / "config.yaml", "server:\n  port: 7001\n")
    other = write(in_tmp / "other.yaml", "server:\n  port: 7002\n")
    s = load_settings(env={CONFIG_ENV: str(other)})
    assert s.server.port == 7002


def test_explicit_file_beats_config_env_var(in_tmp: Path) -> None:
    a = write(in_tmp / "a.yaml", "server:\n  port: 7003\n")
    b = write(in_tmp / "b.yaml", "server:\n  port: 7004\n")
    assert load_settings(a, env={CONFIG_ENV: str(b)}).server.port == 7003


def test_config_env_var_naming_a_missing_file(in_tmp: Path) -> None:
    missing = in_tmp / "missing.yaml"
    with pytest.raises(FileError) as exc:
        load_settings(env={CONFIG_ENV: str(missing)})
    assert errors(exc) == [f"{missing}: No such file or directory"]


# --- precedence -------------------------------------------------------------------------------


def test_precedence_file_env_overrides(in_tmp: Path) -> None:
    cfg = write(in_tmp / "c.yaml", "server:\n  host: 0.0.0.0\n  port: 7\n")
    env = {"VOICE_AGENT_SERVER__PORT": "8"}
    only_file = load_settings(cfg, env={})
    assert (only_file.server.host, only_file.server.port) == ("0.0.0.0", 7)
    with_env = load_settings(cfg, env=env)
    assert (with_env.server.host, with_env.server.port) == ("0.0.0.0", 8)
    with_set = load_settings(cfg, env=env, overrides={("server", "port"): 9})
    assert (with_set.server.host, with_set.server.port) == ("0.0.0.0", 9)
    # an override alone, over the defaults
    assert load_settings(env={}, overrides={("server", "port"): 9}).server.port == 9


@pytest.mark.parametrize(
    ("name", "raw", "get", "value"),
    [
        ("VOICE_AGENT_TURNS__SMART_TURN", "false", lambda s: s.turns.smart_turn, False),
        ("VOICE_AGENT_AUDIO__ECHO_CANCELLATION", "true", lambda s: s.audio.echo_cancellation, True),
        (
            "VOICE_AGENT_SERVER__ALLOWED_ORIGINS",
            "[a, b]",
            lambda s: s.server.allowed_origins,
            ["a", "b"],
        ),
        ("VOICE_AGENT_SERVER__PORT", "9000", lambda s: s.server.port, 9000),
        (
            "VOICE_AGENT_ENGINES__LLM__TEMPERATURE",
            "0.25",
            lambda s: s.engines.llm.temperature,
            0.25,
        ),
        ("VOICE_AGENT_LOG_LEVEL", "debug", lambda s: s.log_level, "debug"),
        (
            "VOICE_AGENT_ENGINES__LLM__BASE_URL",
            "http://h:1/v1",
            lambda s: s.engines.llm.base_url,
            "http://h:1/v1",
        ),
        ("VOICE_AGENT_SERVER__TOKEN", "s3cret", lambda s: s.server.token, "s3cret"),
    ],
)
def test_env_values_are_parsed_as_yaml(
    in_tmp: Path, name: str, raw: str, get: Callable[[Settings], object], value: object
) -> None:
    s = load_settings(env={name: raw})
    assert get(s) == value
    assert type(get(s)) is type(value)


def test_env_var_may_set_a_whole_section(in_tmp: Path) -> None:
    s = load_settings(env={"VOICE_AGENT_SERVER": "{port: 9100, host: h}"})
    assert s.server == ServerSettings(port=9100, host="h")


def test_unrelated_env_vars_are_ignored(in_tmp: Path) -> None:
    env = {"HOME": "/x", "VOICE_AGENTX": "1", "voice_agent_server__port": "1", "PORT": "1"}
    assert load_settings(env=env) == Settings()


def test_env_var_names_are_case_insensitive_after_prefix(in_tmp: Path) -> None:
    assert load_settings(env={"VOICE_AGENT_Server__Port": "9200"}).server.port == 9200


def test_env_does_not_drop_other_file_values(in_tmp: Path) -> None:
    cfg = write(in_tmp / "c.yaml", "server:\n  port: 7\n  max_sessions: 3\nlog_level: error\n")
    s = load_settings(cfg, env={"VOICE_AGENT_SERVER__HOST": "::1"})
    assert (s.server.host, s.server.port, s.server.max_sessions, s.log_level) == (
        "::1",
        7,
        3,
        "error",
    )


# --- errors -----------------------------------------------------------------------------------


def test_ill_typed_key_names_file_line_and_key(in_tmp: Path) -> None:
    cfg = write(in_tmp / "config.yaml", "# comment\nserver:\n  port: abc\n")
    with pytest.raises(FileError) as exc:
        load_settings(env={})
    assert errors(exc) == [f"config.yaml:3: server.port: {PORT_NOT_INT}"]
    assert cfg.exists()


def test_out_of_range_value(in_tmp: Path) -> None:
    cfg = write(in_tmp / "c.yaml", "vad:\n  start_ms: -1\n")
    with pytest.raises(FileError) as exc:
        load_settings(cfg, env={})
    assert errors(exc) == ["c.yaml:2: vad.start_ms: Input should be greater than or equal to 0"]


def test_unknown_nested_key_is_unknown_field(in_tmp: Path) -> None:
    cfg = write(in_tmp / "c.yaml", "engines:\n  llm:\n    model: x\n    colour: red\n")
    with pytest.raises(FileError) as exc:
        load_settings(cfg, env={})
    assert errors(exc) == ["c.yaml:4: engines.llm.colour: unknown field"]


def test_unknown_top_level_key(in_tmp: Path) -> None:
    cfg = write(in_tmp / "c.yaml", "log_level: info\nsurver:\n  port: 1\n")
    with pytest.raises(FileError) as exc:
        load_settings(cfg, env={})
    assert errors(exc) == ["c.yaml:2: surver: unknown field"]


def test_all_problems_of_a_file_are_reported_at_once(in_tmp: Path) -> None:
    cfg = write(
        in_tmp / "c.yaml",
        "server:\n  host: x\n  port: abc\n  bogus: 1\nvad:\n  start_ms: -1\nnope: 1\n",
    )
    with pytest.raises(FileError) as exc:
        load_settings(cfg, env={})
    assert sorted(errors(exc)) == sorted(
        [
            f"c.yaml:3: server.port: {PORT_NOT_INT}",
            "c.yaml:4: server.bogus: unknown field",
            "c.yaml:6: vad.start_ms: Input should be greater than or equal to 0",
            "c.yaml:7: nope: unknown field",
        ]
    )
    assert str(exc.value) == "\n".join(errors(exc))


def test_env_var_error_names_the_variable(in_tmp: Path) -> None:
    cfg = write(in_tmp / "c.yaml", "server:\n  port: 7\n")
    with pytest.raises(FileError) as exc:
        load_settings(cfg, env={"VOICE_AGENT_SERVER__PORT": "abc"})
    assert errors(exc) == [f"$VOICE_AGENT_SERVER__PORT: server.port: {PORT_NOT_INT}"]


def test_env_var_unknown_key_names_the_variable(in_tmp: Path) -> None:
    with pytest.raises(FileError) as exc:
        load_settings(env={"VOICE_AGENT_SERVER__PROT": "1"})
    assert errors(exc) == ["$VOICE_AGENT_SERVER__PROT: server.prot: unknown field"]


def test_env_var_setting_a_section_names_the_variable(in_tmp: Path) -> None:
    with pytest.raises(FileError) as exc:
        load_settings(env={"VOICE_AGENT_SERVER": "{port: abc}"})
    assert errors(exc) == [f"$VOICE_AGENT_SERVER: server.port: {PORT_NOT_INT}"]


def test_override_error_names_the_flag(in_tmp: Path) -> None:
    with pytest.raises(FileError) as exc:
        load_settings(env={"VOICE_AGENT_SERVER__PORT": "8"}, overrides={("server", "port"): "x"})
    assert errors(exc) == [f"--set server.port: server.port: {PORT_NOT_INT}"]


def test_errors_from_every_layer_together(in_tmp: Path) -> None:
    cfg = write(in_tmp / "c.yaml", "log_level: loud\n")
    with pytest.raises(FileError) as exc:
        load_settings(
            cfg,
            env={"VOICE_AGENT_VAD__STOP_MS": "-5"},
            overrides={("server", "port"): 70000},
        )
    assert sorted(errors(exc)) == sorted(
        [
            "$VOICE_AGENT_VAD__STOP_MS: vad.stop_ms: Input should be greater than or equal to 0",
            "--set server.port: server.port: Input should be less than or equal to 65535",
            "c.yaml:1: log_level: Input should be 'debug', 'info', 'warning' or 'error'",
        ]
    )


@pytest.mark.parametrize("text", ["- a\n- b\n", "just words\n", "42\n"])
def test_config_that_is_not_a_mapping(in_tmp: Path, text: str) -> None:
    cfg = write(in_tmp / "c.yaml", text)
    with pytest.raises(FileError) as exc:
        load_settings(cfg, env={})
    assert errors(exc) == ["c.yaml:1: the config must be a mapping of sections"]


def test_config_with_invalid_yaml(in_tmp: Path) -> None:
    cfg = write(in_tmp / "c.yaml", "server:\n  port: 1\n  port: 2\n")
    with pytest.raises(FileError) as exc:
        load_settings(cfg, env={})
    assert errors(exc) == ["c.yaml:3: invalid YAML: duplicate key 'port'"]


# --- parse_assignment -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("server.port=9000", (("server", "port"), 9000)),
        ("server.port = 9000", (("server", "port"), 9000)),
        ("log_level=debug", (("log_level",), "debug")),
        ("server.allowed_origins=[a, b]", (("server", "allowed_origins"), ["a", "b"])),
        ("turns.smart_turn=false", (("turns", "smart_turn"), False)),
        ("server.token=a=b", (("server", "token"), "a=b")),
        ("server.token=", (("server", "token"), "")),
    ],
)
def test_parse_assignment(text: str, parsed: tuple[tuple[str, ...], object]) -> None:
    assert parse_assignment(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server.port", "--set: server.port: expected KEY=VALUE, e.g. server.port=9000"),
        ("=9000", "--set: =9000: expected KEY=VALUE, e.g. server.port=9000"),
        ("  =1", "--set:   =1: expected KEY=VALUE, e.g. server.port=9000"),
        ("", "--set: expected KEY=VALUE, e.g. server.port=9000"),
    ],
)
def test_malformed_assignment(text: str, message: str) -> None:
    with pytest.raises(FileError) as exc:
        parse_assignment(text)
    assert errors(exc) == [message]
    assert exc.value.problems[0].line is None


def test_parsed_assignment_feeds_load_settings(in_tmp: Path) -> None:
    keys, value = parse_assignment("engines.llm.max_tokens=99")
    assert load_settings(env={}, overrides={keys: value}).engines.llm.max_tokens == 99


# --- settings_as_yaml -------------------------------------------------------------------------


def test_settings_as_yaml_round_trips_defaults(in_tmp: Path) -> None:
    cfg = write(in_tmp / "dump.yaml", settings_as_yaml(Settings()))
    assert load_settings(cfg, env={}) == Settings()


def test_settings_as_yaml_round_trips_changed_values(in_tmp: Path) -> None:
    changed = load_settings(
        env={},
        overrides={
            ("server", "port"): 1234,
            ("server", "token"): "12345",  # a string that looks like a number
            ("server", "host"): "2024-01-01",  # a string that looks like a date
            ("server", "allowed_origins"): ["https://a.example", "yes"],
            ("engines", "llm", "model_path"): "/models/x.gguf",
            ("engines", "tts", "kokoro_model"): "my-kokoro",
            ("metrics", "jsonl_path"): "turns.jsonl",
            ("personas", "dirs"): ["~/p", "/q"],
            ("log_level",): "debug",
        },
    )
    assert changed.engines.llm.model_path == Path("/models/x.gguf")
    assert changed != Settings()
    cfg = write(in_tmp / "dump.yaml", settings_as_yaml(changed))
    assert load_settings(cfg, env={}) == changed


# --- values YAML cannot read ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["env", "set"])
def test_impossible_date_value_is_kept_as_text(in_tmp: Path, how: str) -> None:
    if how == "env":
        s = load_settings(env={"VOICE_AGENT_SERVER__HOST": "2024-02-30"})
    else:
        keys, value = parse_assignment("server.host=2024-02-30")
        assert value == "2024-02-30"
        s = load_settings(env={}, overrides={keys: value})
    assert s.server.host == "2024-02-30"


def test_unparsable_env_value_is_judged_as_text(in_tmp: Path) -> None:
    with pytest.raises(FileError) as exc:
        load_settings(env={"VOICE_AGENT_SERVER__PORT": "[1, 2"})
    assert errors(exc) == [f"$VOICE_AGENT_SERVER__PORT: server.port: {PORT_NOT_INT}"]


def test_a_secret_that_starts_like_a_yaml_comment_stays_text() -> None:
    s = load_settings(env={"VOICE_AGENT_SERVER__TOKEN": "#s3cret"})
    assert s.server.token == "#s3cret"
    assert load_settings(env={"VOICE_AGENT_SERVER__TOKEN": "null"}).server.token is None
