"""The one way YAML is read: safe tags only, bounded, and no key given twice.

PyYAML's ``safe_load`` builds no objects beyond plain data, but it still accepts three things
that hurt a user:

* a key written twice in one mapping (the second ``optim:`` silently replaces the first);
* aliases that expand into a huge document ("billion laughs": a few lines that become
  gigabytes once anything walks the data), or that refer to themselves;
* nesting thousands of levels deep (PyYAML composes recursively: a ``RecursionError``).

:func:`load` refuses each of them with a one-line :class:`~vitdistill.errors.UserError` naming the
line. Its limits are far beyond any recipe: :data:`MAX_DEPTH` levels and :data:`MAX_NODES` values
once every alias is expanded.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from vitdistill.errors import UserError

MAX_DEPTH = 64
MAX_NODES = 100_000
_MERGE = "tag:yaml.org,2002:merge"


class YAMLLimitError(UserError):
    """A YAML document over one of the bounds, or with a key given twice."""


class _Loader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLLimitError(f"nested deeper than {MAX_DEPTH} levels{_at(self.peek_event())}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, str] = {}
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE:
                value = self._key_value(key)
                if value in seen:
                    also = "" if seen[value] == key.value else f" (as {seen[value]!r} and {key.value!r})"
                    raise YAMLLimitError(f"key {key.value!r} is given twice in one mapping{also}{_at(key)}")
                seen[value] = key.value
        return node

    def _key_value(self, key: ScalarNode) -> Any:
        """The key as the mapping will hold it: ``1`` and ``0x1``, ``~`` and ``null`` are one key."""
        try:
            value = self.construct_object(key)
            hash(value)
        except Exception:  # not constructible or not hashable: construction reports it later
            return (key.tag, key.value)
        return value


def _at(item) -> str:
    mark = getattr(item, "start_mark", None)
    return f" (line {mark.line + 1})" if mark is not None else ""


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expanded(root: Node) -> None:
    """Size and depth of the document with every alias expanded (memoised: linear in the file)."""
    size: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()

    def too_deep(node: Node) -> YAMLLimitError:
        return YAMLLimitError(f"nested deeper than {MAX_DEPTH} levels once aliases expand{_at(node)}")

    def visit(node: Node, level: int) -> tuple[int, int]:
        key = id(node)
        if key in size:
            if level + size[key][1] - 1 > MAX_DEPTH:
                raise too_deep(node)
            return size[key]
        if key in open_:
            raise YAMLLimitError(f"an alias refers to the value that contains it{_at(node)}")
        if level > MAX_DEPTH:
            raise too_deep(node)
        open_.add(key)
        n, d = 1, 1
        for child in _children(node):
            cn, cd = visit(child, level + 1)
            n, d = n + cn, max(d, cd + 1)
            if n > MAX_NODES:
                raise YAMLLimitError(f"holds more than {MAX_NODES} values once aliases expand{_at(node)}")
        open_.discard(key)
        size[key] = (n, d)
        return n, d

    visit(root, 1)


def load(text: str, source: str = "YAML") -> Any:
    """``yaml.safe_load(text)`` within the bounds above; ``yaml.YAMLError`` for text that is not YAML.

    ``source`` names the text in the one-line error (``config file 'a.yaml'``, ``'overrides' model.kwargs``).
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded(node)
        return loader.construct_document(node)
    except YAMLLimitError as e:
        raise YAMLLimitError(f"{source}: {e}") from None
    finally:
        loader.dispose()
