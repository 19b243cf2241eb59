"""Reading what a run directory holds (config.yaml, overrides.yaml, a checkpoint's config text) as
untrusted data: bounded in size and nesting, without YAML aliases, plain types only.

A run directory may come from elsewhere (a colleague, a downloaded benchmark, a shared scratch
folder). Its YAML is parsed with the safe loader (no tags, no objects), and first scanned as a
stream of events, which costs time linear in the text and builds nothing: an alias (``*a``, the
tool of "billion laughs" bombs), nesting deeper than :data:`MAX_DEPTH` or more than
:data:`MAX_NODES` nodes is refused before anything is constructed, and so is a text over
:data:`MAX_BYTES`. Command-line values are bounded the same way (:func:`nesting_depth`).
"""

from __future__ import annotations

from typing import Any

import yaml

#: the largest YAML text read from a run directory (a run's config.yaml is a few kilobytes)
MAX_BYTES = 1 << 20
#: the deepest nesting of mappings and lists (a config is about 5 deep)
MAX_DEPTH = 32
#: the most scalars, mappings and lists in one file
MAX_NODES = 100_000


class UntrustedYAMLError(ValueError):
    """A run directory's YAML that is refused (too large, too deep, aliases, not YAML)."""


def load_untrusted_yaml(text: str | bytes) -> Any:
    """The plain data of a YAML text from a run directory; UntrustedYAMLError when it is refused."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UntrustedYAMLError(f"not UTF-8 text ({e})") from None
    if len(text) > MAX_BYTES:
        raise UntrustedYAMLError(f"{len(text):,} characters, more than the {MAX_BYTES:,} accepted")
    depth = nodes = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise UntrustedYAMLError(
                    f"a YAML alias (*{event.anchor}) at line {event.start_mark.line + 1}: aliases are not "
                    "accepted in run-directory files (mtl-train never writes them)"
                )
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise UntrustedYAMLError(
                        f"nested more than {MAX_DEPTH} levels deep (line {event.start_mark.line + 1})"
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            if isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                nodes += 1
                if nodes > MAX_NODES:
                    raise UntrustedYAMLError(f"more than {MAX_NODES:,} values")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UntrustedYAMLError(f"not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:  # a defence in depth: the scan above refuses deep texts first
        raise UntrustedYAMLError(f"nested more than {MAX_DEPTH} levels deep") from None


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` brackets in a command-line value (quotes respected)."""
    depth = deepest = 0
    quote = None
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest
