"""The one YAML reader: PyYAML's safe loader, bounded.

Every config or hyperparameter file speakerid reads (training configs, ``--set`` values,
WeSpeaker ``config.yaml``, SpeechBrain ``hyperparams.yaml``) goes through :func:`load_yaml`.
Besides building only plain data (no tags run code), it refuses, as a :class:`YamlLimitError`
(a ``yaml.YAMLError``, so existing ``except yaml.YAMLError`` handlers report it), documents

- whose aliases expand to more than :data:`speakerid.limits.MAX_YAML_NODES` nodes (a
  "billion laughs" alias bomb: a 1 KB file that would become gigabytes once anything walks
  or dumps it);
- with a recursive alias (a node that contains itself: nothing can walk or dump it);
- nested too deeply for the parser (``RecursionError``).
"""

from __future__ import annotations

from typing import Any

import yaml

from speakerid.limits import MAX_YAML_NODES

__all__ = ["YamlLimitError", "BoundedSafeLoader", "load_yaml", "expanded_size", "yaml_problem"]


class YamlLimitError(yaml.YAMLError):
    """A YAML document larger or deeper than speakerid reads."""


def expanded_size(node: yaml.Node, limit: int = MAX_YAML_NODES) -> int:
    """Nodes of ``node`` with every alias expanded (counted once per use); raises
    :class:`YamlLimitError` past ``limit`` or for a node that contains itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YamlLimitError(f"recursive alias at line {n.start_mark.line + 1}: a node contains itself")
        active.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise YamlLimitError(f"expands to more than {limit} nodes through its aliases (an alias bomb?)")
        active.discard(key)
        sizes[key] = total
        return total

    return size(node)


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that checks each document's expanded size before building it."""

    max_nodes = MAX_YAML_NODES

    def construct_document(self, node: yaml.Node) -> Any:
        expanded_size(node, self.max_nodes)
        return super().construct_document(node)


def load_yaml(text: str, loader: type[BoundedSafeLoader] = BoundedSafeLoader) -> Any:
    """``yaml.load(text, loader)`` with the bounds of the module doc (``loader`` may add
    constructors; it must derive from :class:`BoundedSafeLoader`)."""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 -- a SafeLoader subclass
    except RecursionError:
        raise YamlLimitError("nested too deeply to read") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for an error of :func:`load_yaml`: the bound it broke, or "not valid YAML (...)"."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first if isinstance(exc, YamlLimitError) else f"not valid YAML ({first})"
