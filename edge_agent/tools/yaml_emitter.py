"""A minimal, deterministic YAML emitter for plain data (dicts, lists, scalars).

Block style, keys in the order given, strings plain where YAML reads them back as the
same string and JSON-quoted elsewhere, so generated files (``docs/asyncapi.yaml``) are
stable byte for byte and need no YAML library to write.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

# Plain (unquoted) scalars: start with a letter, no ':' or '#', no trailing space; anything
# else is written as a JSON string, which is also a valid YAML double-quoted scalar.
_PLAIN: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$./ ,;()'`=<>+-]*(?<! )$")
_RESERVED: Final = frozenset(
    {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"}
)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text:  # YAML 1.1 floats need a dot: 1e+16 -> 1.0e+16
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value, ensure_ascii=True)
    raise TypeError(f"cannot emit {type(value).__name__} as YAML")


def _block(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{_scalar(str(key))}:"
            if isinstance(item, dict | list) and item:
                lines.append(head)
                lines.extend(_block(item, indent + 2))
            else:
                lines.append(f"{head} {_inline(item)}")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = _block(item, indent + 2)
                lines.append(f"{pad}- {nested[0][indent + 2 :]}")
                lines.extend(nested[1:])
            else:
                lines.append(f"{pad}- {_inline(item)}")
    return lines


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def to_yaml(document: dict[str, Any]) -> str:
    """Block-style YAML for plain data; ``yaml.safe_load`` of it gives ``document`` back."""
    return "\n".join(_block(document, 0)) + "\n"
