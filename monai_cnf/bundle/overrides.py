"""``key=value`` overrides of a bundle config, parsed MONAI style and checked against the merged config.

Checked before any work starts: a key the config lacks is refused with the closest known key (:mod:`difflib`), and a
value whose JSON type differs from the one the bundle holds (following ``@`` references) is refused naming the key.
Expressions (``$...``) and references (``@...``) are accepted as MONAI accepts them.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from monai_cnf.bundle.files import BundleError

__all__ = ["check_overrides", "config_ids", "parse_overrides"]

_SEP = "#"


def parse_overrides(items: Iterable[str] | None) -> dict[str, Any]:
    """``key=value`` strings -> overrides, MONAI style: values are JSON when they parse, else strings.

    Keys use MONAI's ``#`` (or ``::``) separator, e.g. ``train#dataloader#batch_size=4``.

    >>> parse_overrides(["a#b=4", "c=[1, 2]", "d=hello", "e=null", "f::g=1"])
    {'a#b': 4, 'c': [1, 2], 'd': 'hello', 'e': None, 'f#g': 1}
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip().replace("::", _SEP)
        if not sep or not key:
            raise BundleError(f"an override is key=value (e.g. train#dataloader#batch_size=4), got {item!r}.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def config_ids(config: Any, prefix: str = "") -> Iterator[str]:
    """Every id of a raw config, MONAI style (``a#b#0``), parents before children.

    >>> list(config_ids({"a": {"b": [1, 2]}, "c": 3}))
    ['a', 'a#b', 'a#b#0', 'a#b#1', 'c']
    """
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        cid = f"{prefix}{_SEP}{key}" if prefix else str(key)
        yield cid
        yield from config_ids(value, cid)


def _lookup(config: Any, cid: str) -> Any:
    node = config
    for part in cid.split(_SEP):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _follow(config: Mapping[str, Any], value: Any, depth: int = 0) -> Any:
    """A raw value with ``@id`` references replaced by what they point at (expressions stay as they are)."""
    while isinstance(value, str) and value.startswith("@") and depth < 20:
        try:
            value = _lookup(config, value[1:])
        except (KeyError, IndexError, ValueError):
            return None
        depth += 1
    return value


def _kind(value: Any) -> str | None:
    """The JSON type of a value, or None when any value fits (null, expressions, references)."""
    if value is None or (isinstance(value, str) and value[:1] in ("$", "@", "%")):
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number" if isinstance(value, float) else "integer"
    return {str: "string", list: "list", dict: "object"}.get(type(value))


def check_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any], source: str = "the bundle") -> None:
    """Refuse overrides of ids the merged raw ``config`` lacks, or with values of another JSON type.

    Args:
        config: the merged raw config (``ConfigParser.get()``).
        overrides: id -> value, e.g. from :func:`parse_overrides`.
        source: what ``config`` is, for the message. Defaults to "the bundle".

    Raises:
        BundleError: naming the key, the closest known key or the expected type.

    Example:
        >>> cfg = {"learning_rate": 0.001, "num_levels": 2, "network_def": {"num_levels": "@num_levels"}}
        >>> check_overrides(cfg, {"learning_rate": 1, "network_def#num_levels": 3})
        >>> check_overrides(cfg, {"learning_rte": 0.01})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        monai_cnf.bundle.files.BundleError: unknown override key 'learning_rte' ...did you mean 'learning_rate'?
        >>> check_overrides(cfg, {"network_def#num_levels": "abc"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        monai_cnf.bundle.files.BundleError: override network_def#num_levels='abc': ... an integer there (2)...
    """
    known: list[str] | None = None
    for key, value in overrides.items():
        try:
            current = _lookup(config, key)
        except (KeyError, IndexError, ValueError, TypeError):
            known = known if known is not None else list(config_ids(config))
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "list the keys with `python -m monai.bundle run --help`."
            raise BundleError(f"unknown override key {key!r} (not in {source}); {hint}") from None
        resolved = _follow(config, current)
        expected, got = _kind(resolved), _kind(value)
        if expected is None or got is None or expected == got or (expected == "number" and got == "integer"):
            continue
        article = "an" if expected[0] in "aeiou" else "a"
        raise BundleError(
            f"override {key}={value!r}: {source} holds {article} {expected} there ({json.dumps(resolved)}); "
            f"pass {article} {expected}."
        )
