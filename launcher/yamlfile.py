"""YAML loading that remembers where every key came from, so errors can name file, key and line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError


@dataclass
class Located:
    """A loaded document plus the source line of each dotted key path."""

    data: Any
    file: str
    lines: dict[str, int] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # key → the --set that wrote it

    def line(self, key: str) -> int | None:
        """The line of `key`, or of its nearest ancestor that has one."""
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return None

    def error(self, key: str, message: str, hint: str | None = None) -> UserError:
        for origin_key, origin in self.origins.items():
            if key and (origin_key == key or origin_key.startswith(key + ".") or key.startswith(origin_key + ".")
                        or key.startswith(origin_key + "[")):
                return UserError(message, file=origin, key=key, hint=hint)
        return UserError(message, file=self.file, key=key or None, line=self.line(key), hint=hint)


def join_key(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def load_yaml_text(text: str, file: str) -> Located:
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"YAML syntax error: {problem}", file=file, line=line) from None
    finally:
        loader.dispose()
    located = Located(data=None, file=file)
    if node is None:
        located.data = {}
        return located
    constructor = yaml.SafeLoader("")
    located.data = _build(node, "", located, constructor)
    return located


def load_yaml_file(path: str) -> Located:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise UserError(f"cannot read file: {exc.strerror}", file=path) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start}: {exc.reason})", file=path) from None
    return load_yaml_text(text, path)


def _build(node: Any, path: str, located: Located, constructor: Any) -> Any:
    import yaml

    located.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        _construct(lambda: constructor.flatten_mapping(node), node, path, located)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(lambda: constructor.construct_object(key_node, deep=True), key_node, path, located)
            if not isinstance(key, (str, int, float, bool)):
                raise UserError("mapping keys must be plain scalars", file=located.file,
                                key=path or None, line=key_node.start_mark.line + 1)
            child = join_key(path, key)
            if key in result:
                raise UserError(f"duplicate key {key!r}", file=located.file, key=child,
                                line=key_node.start_mark.line + 1)
            located.lines[child] = key_node.start_mark.line + 1
            result[key] = _build(value_node, child, located, constructor)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, join_key(path, index), located, constructor)
                for index, item in enumerate(node.value)]
    return _construct(lambda: constructor.construct_object(node, deep=True), node, path, located)


def _construct(build: Any, node: Any, path: str, located: Located) -> Any:
    """Construct a node; a tag PyYAML refuses or a value it cannot build (`!!int "x"`, an
    impossible date, a merge of non-mappings) becomes a UserError at that node's line."""
    import yaml

    try:
        return build()
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        mark = getattr(exc, "problem_mark", None) or node.start_mark
        raise UserError(f"cannot read this YAML value: {problem}", file=located.file, key=path or None,
                        line=mark.line + 1) from None


def resolve_named_file(name: str, directory: str, what: str, flag: str) -> str:
    """A path as given, or NAME of a bundled `directory/NAME.yaml`; UserError naming the bundled ones."""
    if os.sep in name or name.endswith((".yaml", ".yml")) or os.path.exists(name):
        return name
    candidate = os.path.join(directory, f"{name}.yaml")
    if not os.path.exists(candidate):
        from .schema import did_you_mean

        known = sorted(f[:-5] for f in os.listdir(directory) if f.endswith(".yaml"))
        raise UserError(f"no {what} named {name!r}; bundled: {', '.join(known)}", key=flag,
                        hint=did_you_mean(name, known))
    return candidate
