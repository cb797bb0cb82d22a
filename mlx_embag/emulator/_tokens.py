"""The token scanner the source rewriters share (translate, vectors, strict).

Example:
    >>> toks = TOKEN.findall("a = /* c */ b;")
    >>> toks[significant(toks, 3)]
    'b'
"""

from __future__ import annotations

import re

TOKEN = re.compile(
    r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|\.?\d(?:[eEpP][+-]|[\w.])*"
    r"|[A-Za-z_]\w*|\s+|.",
    re.S,
)


def significant(toks: list[str], i: int) -> int:
    """Index of the first token at or after ``i`` that is not blank or a comment."""
    while i < len(toks) and (toks[i].isspace() or toks[i].startswith(("//", "/*"))):
        i += 1
    return i
