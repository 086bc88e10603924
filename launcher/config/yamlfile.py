"""YAML loading that remembers where every key came from, so errors can name file, key and line.

It is also the first gate for hostile input: the file size, the number of values (YAML aliases
included), the nesting depth and key lengths are bounded before any of it is built, and control
characters are refused wherever they stand (a raw byte in the file or an escape in a quoted
string), because sbatch, bash and terminals read them differently from us.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.resolver import Resolver

from ..core.errors import SECRET_VALUE, TOKEN_VALUE, UserError, did_you_mean

try:  # libyaml's event parser: ~10x faster than PyYAML's, so the node budget is spent quickly
    from yaml.cyaml import CParser as _EventParser
except ImportError:  # a PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _EventParser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)

MAX_FILE_BYTES = 1 << 20  # a real profile or recipe is 1-3 KiB
MAX_NODES = 20_000  # values built, each alias expansion counted again; a real file has ~150
MAX_DEPTH = 16  # a recipe nests 4 deep
MAX_KEY_CHARS = 128
SHOWN_CHARS = 60  # a value quoted in a message is cut to this

# Refused in every key and string value: C0 controls but tab and newline, DEL, C1, the Unicode line
# and paragraph separators, and bidi overrides (they reorder what a terminal shows). Newlines are
# allowed here and refused by the schema outside the few free-text fields.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Refused raw in the file: the same, but CR (a CRLF line end) and newline are line breaks there.
RAW_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_NAMES = {0: "NUL", 7: "BEL", 8: "BS", 9: "TAB", 10: "newline", 11: "VT (\\v)", 12: "FF (\\f)",
                  13: "CR (\\r)", 27: "ESC", 127: "DEL", 0x85: "NEL", 0x2028: "LINE SEPARATOR",
                  0x2029: "PARAGRAPH SEPARATOR"}
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")
_INT_TAG, _FLOAT_TAG, _MERGE_TAG = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                                    "tag:yaml.org,2002:merge")


class YamlSyntaxError(UserError):
    """The text is not YAML (a `--set` value then stands as a plain string)."""


def looks_secret(text: str) -> bool:
    """Broad: decides what a message may quote."""
    return SECRET_VALUE.search(text) is not None


def looks_like_token(text: str) -> bool:
    """Narrow: a known token shape, refused in a file whatever key holds it."""
    return TOKEN_VALUE.search(text) is not None


def shown(value: Any) -> str:
    """`value` for a message: repr'd (so control characters are escaped), cut to SHOWN_CHARS, and
    never a value that looks like a secret: messages land in terminals and CI logs."""
    text = repr(value)
    if looks_secret(text):
        return "<a value that looks like a secret, not shown>"
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def clipped(text: str, limit: int = 120) -> str:
    """Message text that may quote the input (a YAML parser's problem): escaped, cut, no secrets."""
    text = repr(text)[1:-1]
    if looks_secret(text):
        return "<text that looks like a secret, not shown>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def control_problem(text: str, allow_newline: bool = True) -> str | None:
    """What is wrong with `text` as a value that may reach a script or a terminal, or None."""
    match = CONTROL.search(text) or (None if allow_newline else re.search("\n", text))
    if match is None:
        return None
    code = ord(match.group())
    name = _CONTROL_NAMES.get(code, f"U+{code:04X}")
    return f"contains the control character {name} at position {match.start()}; it is not allowed here"


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


class _BoundedComposer(Composer, _EventParser, Resolver):
    """PyYAML's composer over libyaml's events, refusing more than MAX_NODES nodes or MAX_DEPTH
    levels while it composes, so a huge or deeply nested document costs little before it is refused."""

    def __init__(self, text: str, file: str):
        _EventParser.__init__(self, text)
        Composer.__init__(self)
        Resolver.__init__(self)
        self.file = file
        self.budget = MAX_NODES
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            return super().compose_node(parent, index)
        line = self.peek_event().start_mark.line + 1
        self.budget -= 1
        if self.budget < 0:
            raise UserError(f"more than {MAX_NODES} values; a profile or recipe has a few hundred", file=self.file,
                            line=line)
        if self.depth >= MAX_DEPTH:
            raise UserError(f"nested more than {MAX_DEPTH} levels deep", file=self.file, line=line)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml_text(text: str, file: str) -> Located:
    raw = RAW_CONTROL.search(text)
    if raw is not None:
        raise _raw_control_error(text, raw.start(), file)
    return _load(text, file)


def _load(text: str, file: str) -> Located:
    loader = _BoundedComposer(text, file)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlSyntaxError(f"YAML syntax error: {clipped(problem)}", file=file, line=line) from None
    finally:
        loader.dispose()
    located = Located(data=None, file=file)
    if node is None:
        located.data = {}
        return located
    builder = _Builder(located)
    located.data = builder.build(node, "", 0)
    return located


def _raw_control_error(text: str, position: int, file: str) -> UserError:
    """A control character written raw in the file: name its line and, where the rest of the file
    parses, the key whose key or value holds it (found by parsing with a placeholder in its place)."""
    line = text.count("\n", 0, position) + 1
    code = ord(text[position])
    message = f"the control character {_CONTROL_NAMES.get(code, f'U+{code:04X}')} is written raw in the file"
    try:
        key = _holder(_load(text[:position] + _PLACEHOLDER + RAW_CONTROL.sub(" ", text[position + 1:]), file).data, "")
    except UserError:
        key = None
    return UserError(message, file=file, key=key or None, line=line,
                     hint="delete it; write a value's special characters in plain text")


_PLACEHOLDER = "\ue000"  # private use: printable to YAML, absent from real profiles


def _holder(data: Any, path: str) -> str | None:
    """The dotted path of the first key or string value that holds the placeholder."""
    if isinstance(data, str):
        return path if _PLACEHOLDER in data else None
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        child = join_key(path, key)
        if _PLACEHOLDER in str(key):
            return path or child
        found = _holder(value, child)
        if found:
            return found
    return None


def load_yaml_file(path: str) -> Located:
    """Read at most MAX_FILE_BYTES (a 50 MB file is refused without reading it), then load it. Only a
    regular file is read: a FIFO or a device would block or never end (opened non-blocking to find out)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise UserError("not a regular file (a FIFO, device or directory cannot be a profile or recipe)",
                                file=path)
            size = info.st_size
            data = handle.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
            size = max(size, len(data))
    except OSError as exc:
        raise UserError(f"cannot read file: {exc.strerror}", file=path) from None
    if size > MAX_FILE_BYTES:
        raise UserError(f"file is larger than {MAX_FILE_BYTES // 1024} KiB; a profile or recipe is a few KiB",
                        file=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start}: {exc.reason})", file=path) from None
    return load_yaml_text(text, path)


class _Builder:
    """Nodes → plain data, recording lines and counting every value built: aliases share nodes, so
    a few lines of `&a [*b, *b, …]` would otherwise expand to billions of values."""

    def __init__(self, located: Located):
        self.located = located
        self.constructor = yaml.SafeLoader("")
        self.budget = MAX_NODES

    def error(self, node: Any, path: str, message: str, hint: str | None = None) -> UserError:
        return UserError(message, file=self.located.file, key=path or None, line=node.start_mark.line + 1, hint=hint)

    def build(self, node: Any, path: str, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise self.error(node, path, f"expands to more than {MAX_NODES} values (YAML aliases?); "
                                         f"a profile or recipe has a few hundred")
        if depth > MAX_DEPTH:
            raise self.error(node, path, f"nested more than {MAX_DEPTH} levels deep (a recursive YAML alias?)")
        self.located.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, join_key(path, index), depth + 1) for index, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _mapping(self, node: Any, path: str, depth: int) -> dict[Any, Any]:
        """A mapping with YAML merge keys: `<<: *base` (or a list of them, earlier ones winning)
        supplies keys that the mapping's own keys override; a key written twice is an error."""
        merged: dict[Any, Any] = {}
        own: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise self.error(source, path, "a merge key (<<) takes a mapping or a list of mappings")
                    for key, value in self.build(source, path, depth + 1).items():
                        merged.setdefault(key, value)
                continue
            key = self._key(key_node, path)
            child = join_key(path, key)
            if key in own:
                raise self.error(key_node, child, f"duplicate key {shown(key)}")
            self.located.lines[child] = key_node.start_mark.line + 1
            own[key] = self.build(value_node, child, depth + 1)
        merged.update(own)
        return merged

    def _key(self, node: Any, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, path, "mapping keys must be plain scalars")
        key = self._scalar(node, path, "a key")
        if not isinstance(key, (str, int, float, bool)):
            raise self.error(node, path, "mapping keys must be plain scalars")
        text = str(key)
        if looks_like_token(text):
            raise self.error(node, path, "a key here looks like a secret token (not shown); secrets are listed "
                                         "by name in env_vars and never written in a file")
        if len(text) > MAX_KEY_CHARS:
            raise self.error(node, path, f"a key of {len(text)} characters; keys are at most {MAX_KEY_CHARS}")
        problem = control_problem(text, allow_newline=False) or (
            "contains a tab; it is not allowed in a key" if "\t" in text else None)
        if problem:
            raise self.error(node, path, f"a key {problem}")
        return key

    def _scalar(self, node: Any, path: str, what: str = "the value") -> Any:
        if not node.style and node.tag in (_INT_TAG, _FLOAT_TAG):  # plain: None (PyYAML) or "" (libyaml)
            if ":" in node.value:
                raise self.error(node, path, f"YAML 1.1 reads {shown(node.value)} as a base-60 number",
                                 "quote it if it is a time or a string")
            if _LEADING_ZERO.match(node.value):
                raise self.error(node, path, f"YAML 1.1 reads {shown(node.value)} as an octal number",
                                 "drop the leading zero, or quote it if it is a string")
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            # a tag PyYAML refuses or a value it cannot build (`!!int "x"`, an impossible date)
            problem = getattr(exc, "problem", None) or str(exc)
            mark = getattr(exc, "problem_mark", None) or node.start_mark
            raise UserError(f"cannot read this YAML value: {clipped(problem)}", file=self.located.file,
                            key=path or None, line=mark.line + 1) from None
        if isinstance(value, str):
            problem = control_problem(value)
            if problem:
                raise self.error(node, path, f"{what} {problem}",
                                 "control characters reach scripts and terminals; write plain text")
        return value


def resolve_named_file(name: str, directory: str, what: str, flag: str) -> str:
    """A path as given, or NAME of a bundled `directory/NAME.yaml`; UserError naming the bundled ones."""
    problem = control_problem(name, allow_newline=False)
    if problem:
        raise UserError(f"the name {problem}", key=flag)
    if os.sep in name or name.endswith((".yaml", ".yml")) or os.path.exists(name):
        return name
    candidate = os.path.join(directory, f"{name}.yaml")
    if not os.path.exists(candidate):

        known = sorted(f[:-5] for f in os.listdir(directory) if f.endswith(".yaml"))
        raise UserError(f"no {what} named {shown(name)}; bundled: {', '.join(known)}", key=flag,
                        hint=did_you_mean(name, known))
    return candidate
