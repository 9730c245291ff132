"""Safe, line-numbered YAML for files people write (config, personas).

`load_yaml` returns plain data plus a map from each key path to the line it was written on, so
that a validation error can name ``file:line: field: reason``. Loading is deliberately strict:
only the standard YAML types, no anchors or aliases (which also rules out "billion laughs"),
no duplicate keys, and a size limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

MAX_YAML_BYTES = 256 * 1024

Loc = tuple[str | int, ...]


@dataclass(slots=True)
class Problem:
    """One thing wrong with a file, as a person should read it."""

    file: str
    line: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


class FileError(Exception):
    """A file that could not be loaded; `problems` lists every reason, each with its line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(slots=True)
class YamlDoc:
    """Parsed YAML data, with the 1-based line of every key path in it."""

    data: Any
    file: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of the longest prefix of `loc` that the file wrote (a missing key -> its parent)."""
        for n in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:n]))
            if line is not None:
                return line
        return None

    def problems_from(self, err: ValidationError, prefix: Loc = ()) -> list[Problem]:
        """Turn a pydantic error into problems that name this file's lines."""
        out = []
        for e in err.errors():
            loc = prefix + tuple(x for x in e["loc"] if isinstance(x, str | int))
            out.append(Problem(self.file, self.line_of(loc), dotted(loc), _reason(e)))
        return out


def dotted(loc: Iterable[str | int]) -> str:
    """`("voice", "blend", 0, "id")` -> `voice.blend[0].id`."""
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else part)
    return s


def _reason(e: Any) -> str:
    if e["type"] == "extra_forbidden":
        return "unknown field"
    if e["type"] == "missing":
        return "required field is missing"
    msg = str(e["msg"])
    return msg.removeprefix("Value error, ")


MAX_DEPTH = 64


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases (and so exponential alias expansion) and
    nesting deeper than MAX_DEPTH."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases are not allowed", event.start_mark
            )
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml_text(text: str, file: str) -> YamlDoc:
    """Parse YAML text; raise FileError naming the line of any syntax or safety problem."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise FileError([Problem(file, None, "", "not valid Unicode text")]) from None
    if size > MAX_YAML_BYTES:
        raise FileError([Problem(file, None, "", f"file is larger than {MAX_YAML_BYTES} bytes")])
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        doc = YamlDoc(data=None, file=file)
        if node is not None:
            doc.data = _build(loader, node, (), doc)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        raise FileError([Problem(file, line, "", f"invalid YAML: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise FileError([Problem(file, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: Path) -> YamlDoc:
    """Read and parse a YAML file (see `load_yaml_text`)."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise FileError(
                [Problem(str(path), None, "", f"file is larger than {MAX_YAML_BYTES} bytes")]
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FileError([Problem(str(path), None, "", "not UTF-8 text")]) from None
    except OSError as exc:
        raise FileError([Problem(str(path), None, "", exc.strerror or str(exc))]) from None
    return load_yaml_text(text, str(path))


_STD = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_STD + t for t in ("null", "bool", "int", "float", "str", "timestamp")}


def _fail(node: yaml.Node, problem: str) -> yaml.MarkedYAMLError:
    return yaml.MarkedYAMLError(problem=problem, problem_mark=node.start_mark)


def _build(loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, doc: YamlDoc) -> Any:
    doc.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        if node.tag != _STD + "map":
            raise _fail(node, f"tag {node.tag} is not allowed")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                raise _fail(
                    key_node,
                    "keys must be plain words (merge keys and complex keys are not allowed)",
                )
            key = str(_scalar(loader, key_node))
            if key in out:
                raise _fail(key_node, f"duplicate key {key!r}")
            doc.lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _build(loader, value_node, (*loc, key), doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _STD + "seq":
            raise _fail(node, f"tag {node.tag} is not allowed")
        return [_build(loader, item, (*loc, i), doc) for i, item in enumerate(node.value)]
    if node.tag not in _SCALAR_TAGS:
        raise _fail(node, f"tag {node.tag} is not allowed")
    return _scalar(loader, node)


def _scalar(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, KeyError, AttributeError, TypeError, OverflowError) as exc:
        raise _fail(node, f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}") from exc
