"""Reading config files: JSON or YAML, duplicate keys refused, and where each value was written.

YAML (and JSON) parsers keep the last of two equal keys silently, so a second ``url:`` in an
action would quietly replace the first. Both are refused here, naming the key and (for YAML) both
lines. The YAML loader also remembers the line of every key and list item, so an error about a
field can say where the field is (:meth:`Source.line_of`).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError

__all__ = ["Source", "field_path", "read_source"]

PathPart = str | int


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys and records the line of every key and item."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[int, dict[Any, int]] = {}

    def _construct_map(self, node: yaml.MappingNode) -> Iterator[dict[Any, Any]]:
        data: dict[Any, Any] = {}
        yield data
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:  # before merge keys (<<) are flattened in
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(
                        f"line {line}: duplicate key {key_node.value!r} (first at line {seen[key]})"
                    )
                seen[key] = line
        data.update(self.construct_mapping(node))
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node)
            if isinstance(key, Hashable):  # the last pair wins, as in the mapping itself
                lines[key] = key_node.start_mark.line + 1
        self.lines[id(data)] = lines

    def _construct_seq(self, node: yaml.SequenceNode) -> Iterator[list[Any]]:
        data: list[Any] = []
        yield data
        data.extend(self.construct_sequence(node))
        self.lines[id(data)] = {i: item.start_mark.line + 1 for i, item in enumerate(node.value)}


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader._construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader._construct_seq)


@dataclass(slots=True)
class Source:
    """A parsed file and, for YAML, the line of each key and list item."""

    data: Any
    lines: dict[int, dict[Any, int]] = field(default_factory=dict)

    def line_of(self, path: Sequence[PathPart]) -> int | None:
        """The line of the deepest part of ``path`` written in the file (None if unknown)."""
        node, line, rest = self.data, None, list(path)
        while rest and id(node) in self.lines:
            lines = self.lines[id(node)]
            if isinstance(node, list):
                part = rest.pop(0)
                index = int(part) if str(part).isdigit() else -1
                if not 0 <= index < len(node):
                    break
                line, node = lines[index], node[index]
                continue
            if not isinstance(node, dict):
                break
            # A key may itself hold dots (a header named X.Y): try the longest join first.
            for size in range(len(rest), 0, -1):
                key: Any = ".".join(str(p) for p in rest[:size]) if size > 1 else rest[0]
                if isinstance(key, str | int) and key in node and key in lines:
                    line, node, rest = lines[key], node[key], rest[size:]
                    break
            else:
                break
        return line


def field_path(field_text: str) -> list[PathPart]:
    """Split an error's field (``fields[0].pattern``, ``headers.X-Key``) into path parts."""
    parts: list[PathPart] = []
    for piece in field_text.split("."):
        name, *indexes = piece.replace("]", "").split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indexes if i.isdigit())
    return parts


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"duplicate key {key!r}")
        out[key] = value
    return out


def read_source(path: str | Path) -> Source:
    """Parse a JSON or YAML file (by its suffix; anything but ``.json`` is YAML).

    Raises:
        ConfigError: the file cannot be read or parsed, or a mapping repeats a key.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read file: {e.strerror}") from None
    try:
        if p.suffix.lower() == ".json":
            return Source(json.loads(text, object_pairs_hook=_no_duplicates))
        loader = _LineLoader(text)
        try:
            return Source(loader.get_single_data(), loader.lines)
        finally:
            loader.dispose()
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
