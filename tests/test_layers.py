"""No module imports one above it: the package's layers, from the frames up to the commands.

A module may import its own layer and those below. The layers (docs/architecture.md):
0. what everything speaks: frames, events, the event bus, tasks, the engine pool, settings,
   personas, the history, model files, small utilities;
1. the pipeline;
2. the stages and what they drive: audio/, backbone/, turns/;
3. what a session is made with: transports, the timeline, the wire protocol, the engines as
   loaded, metrics, the operators' feed, admission, the engine checks;
4. the session;
5. what serves a session in a protocol of its own: the OpenAI Realtime API, the modes;
6. the server, `talk`, the dashboard;
7. the benches, `doctor`;
8. the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import voice_agent

LAYERS = {
    0: "frames events eventbus tasks executor config yamlfile persona history cachefile looplag"
    " nativecode catalog modelfiles resources __init__",
    1: "pipeline",
    2: "audio backbone turns",
    3: "transports timeline protocol engines metrics operators admission enginecheck records",
    4: "session",
    5: "openai_realtime modes",
    6: "server talk ui",
    7: "bench doctor",
    8: "cli __main__",
}
LAYER = {name: n for n, names in LAYERS.items() for name in names.split()}
PACKAGE = Path(voice_agent.__file__).parent
DATA = {"personas", "models"}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "voice_agent" or len(parts) < 2:
        return None
    return LAYER[parts[1]]


def _modules() -> list[Path]:
    return [
        p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in DATA | {"ui"}
    ]


def test_every_module_has_a_layer() -> None:
    tops = {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in _modules()}
    assert tops <= set(LAYER), tops - set(LAYER)


def test_no_module_imports_one_above_it() -> None:
    upward = []
    for path in _modules():
        module = ".".join(("voice_agent", *path.relative_to(PACKAGE).with_suffix("").parts))
        mine = _layer(module)
        assert mine is not None
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                other = _layer(name)
                if other is not None and other > mine:
                    upward.append(f"{module}:{node.lineno} imports {name}")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import() -> None:
    assert _layer("voice_agent.frames") == 0 and _layer("voice_agent.server.app") == 6
    tree = ast.parse("from voice_agent.session import Session")
    (node,) = tree.body
    assert isinstance(node, ast.ImportFrom) and _layer(str(node.module)) == 4
