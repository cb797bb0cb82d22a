"""Metal's vector constructors through any spelling of a vector type.

The shim's ``float4(...)``-style macros cover the literal names; a kernel
may also construct through ``vec<T, N>(...)`` or an alias of a vector type
(``using U4 = vec<U, 4>; U4(a, b, c, d)``, ``typedef float4 F4;``), which
clang takes as a C cast (a bit cast or an error). :func:`vector_constructors`
routes those calls to the shim's ``__emu_make_vec``, keeping line breaks.

Example:
    >>> print(vector_constructors("using U4 = vec<U, 4>; U4 a = U4(f); auto b = metal::vec<float, 2>(1, 2);"))
    using U4 = vec<U, 4>; U4 a = ::metal::__emu_make_vec<U4>(f); auto b = ::metal::__emu_make_vec<metal::vec<float, 2>>(1, 2);
"""

from __future__ import annotations

import re

from ._tokens import TOKEN as _TOKEN
from ._tokens import significant

_SCALARS = (
    "float",
    "half",
    "bfloat",
    "int",
    "uint",
    "short",
    "ushort",
    "char",
    "uchar",
    "long",
    "ulong",
    "bool",
)
VECTOR_NAMES = frozenset(f"{prefix}{s}{n}" for s in _SCALARS for n in (2, 3, 4) for prefix in ("", "packed_"))
_ALIAS = re.compile(r"\busing\s+(\w+)\s*=\s*(?:::)?(?:metal\s*::\s*)?(vec\s*<|\w+\s*;)")
_TYPEDEF = re.compile(r"\btypedef\s+(?:::)?(?:metal\s*::\s*)?(vec\s*<[^;]*>|\w+)\s+(\w+)\s*;")


def vector_aliases(text: str) -> set[str]:
    """Names the text declares as aliases of vector types (aliases of aliases included).

    Example:
        >>> sorted(vector_aliases("using A = vec<T, 2>; typedef A B; using C = float4; using D = int;"))
        ['A', 'B', 'C']
    """
    names: set[str] = set()
    while True:
        found = set(names)
        for m in _ALIAS.finditer(text):
            target = m[2].rstrip(" ;")
            if target.startswith("vec") or target in VECTOR_NAMES or target in names:
                found.add(m[1])
        for m in _TYPEDEF.finditer(text):
            if m[1].startswith("vec") or m[1] in VECTOR_NAMES or m[1] in names:
                found.add(m[2])
        if found == names:
            return names
        names = found


def vector_constructors(text: str) -> str:
    """``vec<T, N>(...)`` and ``Alias(...)`` become ``::metal::__emu_make_vec<...>(...)``."""
    aliases = vector_aliases(text)
    toks = _TOKEN.findall(text)
    out, i = [], 0
    while i < len(toks):
        tok = toks[i]
        prev = next((t for t in reversed(out) if not t.isspace()), "")
        if tok == "vec" and prev not in (".", ">"):
            j = significant(toks, i + 1)
            if j < len(toks) and toks[j] == "<":
                depth, k = 0, j
                while k < len(toks):
                    depth += toks[k] == "<"
                    depth -= toks[k] == ">"
                    k += 1
                    if depth == 0:
                        break
                nxt = significant(toks, k)
                if nxt < len(toks) and toks[nxt] == "(":
                    qualifier = ""
                    # Pull a preceding `metal::` into the type.
                    if len(out) >= 3 and out[-1] == ":" and out[-2] == ":" and out[-3] == "metal":
                        del out[-3:]
                        qualifier = "metal::"
                    out.append(f"::metal::__emu_make_vec<{qualifier}{''.join(toks[i:k])}>")
                    i = k
                    continue
        elif tok in aliases and prev not in (".", ":", ">", "using", "typedef"):
            nxt = significant(toks, i + 1)
            if nxt < len(toks) and toks[nxt] == "(":
                out.append(f"::metal::__emu_make_vec<{tok}>")
                i += 1
                continue
        out.append(tok)
        i += 1
    return "".join(out)
