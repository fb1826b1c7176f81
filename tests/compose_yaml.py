"""A minimal YAML reader for docker-compose.yml (PyYAML is not a dependency).

Supports the subset the compose file uses: block mappings and sequences by indentation,
``&anchor`` / ``*alias`` / ``<<:`` merge keys, plain, single- and double-quoted scalars, flow
sequences of scalars (``[a, "b"]``), ``{}``, and ``#`` comments. Anything else raises, so the
file cannot silently drift outside what the test understands.
"""
from __future__ import annotations

import re
from typing import Any

_KEY = re.compile(r'^([A-Za-z0-9_.<\-"\']+?|"[^"]*"|\'[^\']*\')\s*:(?:\s+(.*))?$')


def _strip_comment(line: str) -> str:
    out, q = [], ""
    for i, ch in enumerate(line):
        if q:
            if ch == q:
                q = ""
        elif ch in "'\"" and (i == 0 or line[i - 1] in " [,:-"):
            q = ch
        elif ch == "#" and (i == 0 or line[i - 1] == " "):
            break
        out.append(ch)
    return "".join(out).rstrip()


def _split_flow(body: str) -> list[str]:
    parts, cur, q = [], "", ""
    for ch in body:
        if q:
            cur += ch
            if ch == q:
                q = ""
        elif ch in "'\"":
            q = ch
            cur += ch
        elif ch == ",":
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def scalar(text: str) -> Any:
    """A scalar or a flow collection."""
    t = text.strip()
    if t.startswith('"') and t.endswith('"') and len(t) >= 2:
        return bytes(t[1:-1], "utf-8").decode("unicode_escape")
    if t.startswith("'") and t.endswith("'") and len(t) >= 2:
        return t[1:-1].replace("''", "'")
    if t == "{}":
        return {}
    if t.startswith("[") and t.endswith("]"):
        return [scalar(p) for p in _split_flow(t[1:-1])]
    if t in ("true", "false"):
        return t == "true"
    if t in ("null", "~", ""):
        return None
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    if t[0] in "{[&*!|>":
        raise ValueError(f"unsupported YAML construct: {t!r}")
    return t


def loads(text: str) -> Any:
    """Parse ``text``."""
    lines = []
    for raw in text.splitlines():
        s = _strip_comment(raw)
        if s.strip():
            lines.append((len(s) - len(s.lstrip(" ")), s.strip()))
    anchors: dict[str, Any] = {}
    pos = 0

    def block(indent: int) -> Any:
        nonlocal pos
        if pos >= len(lines):
            return None
        ind, s = lines[pos]
        if s.startswith("- ") or s == "-":
            seq = []
            while pos < len(lines) and lines[pos][0] == ind and (lines[pos][1].startswith("- ") or lines[pos][1] == "-"):
                item = lines[pos][1][2:].strip()
                pos += 1
                if not item:
                    seq.append(block(lines[pos][0]) if pos < len(lines) and lines[pos][0] > ind else None)
                elif _KEY.match(item) and not item.startswith(("'", '"')):
                    raise ValueError(f"mapping inside a sequence item is not supported: {item!r}")
                else:
                    seq.append(scalar(item))
            return seq
        mapping: dict[str, Any] = {}
        while pos < len(lines) and lines[pos][0] == ind:
            s = lines[pos][1]
            m = _KEY.match(s)
            if not m:
                raise ValueError(f"line {pos}: cannot parse {s!r}")
            key = str(scalar(m.group(1)))
            rest = (m.group(2) or "").strip()
            pos += 1
            anchor = None
            if rest.startswith("&"):
                anchor, _, rest = rest[1:].partition(" ")
                rest = rest.strip()
            if rest.startswith("*"):
                value = anchors[rest[1:]]
            elif rest:
                value = scalar(rest)
            elif pos < len(lines) and lines[pos][0] > ind:
                value = block(lines[pos][0])
            elif pos < len(lines) and lines[pos][0] == ind and lines[pos][1].startswith("- "):
                value = block(ind)  # a sequence at the key's own indentation
            else:
                value = None
            if anchor:
                anchors[anchor] = value
            if key == "<<":
                for k, v in dict(value).items():
                    mapping.setdefault(k, v)
            else:
                if key in mapping and not isinstance(mapping[key], type(value)):
                    pass
                mapping[key] = value
        return mapping

    out = block(lines[0][0]) if lines else None
    if pos != len(lines):
        raise ValueError(f"unparsed YAML from line {pos}: {lines[pos]}")
    return out


def load_compose(path: str) -> Any:
    """PyYAML when installed (the reference parser), else :func:`loads`."""
    text = open(path).read()
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return loads(text)
    return yaml.safe_load(text)
