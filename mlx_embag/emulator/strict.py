"""The strict pass: what Metal's front end rejects and a plain C++ build accepts.

The kernel's code is built without address spaces (the implicit copy of a
struct out of ``device`` memory is valid MSL, but clang's address-space rules
refuse it), so before that build :func:`check` compiles the same translation
unit once more, syntax only, with ``-DEMU_STRICT=1``: ``device``/``threadgroup``
are clang address spaces and ``constant`` is ``const`` in one, and

- C-style casts to an address-space pointer go through a checked cast
  (``__emu_as_cast``), so one changing the address space is an error;
- ``#pragma unroll N`` checks ``N != 0`` (clang takes 0, Metal refuses it);
- an implicit conversion to ``bfloat`` (``-Wimplicit-float-conversion``, a
  warning in clang) is an error, as on a Mac; clang does not warn when the
  value is exact (``bfloat x = 0.0f;``), so the kernel function's AST is
  searched for every implicit float-to-bfloat cast too;
- an error that is only clang refusing a struct's implicit copy or move out of
  or into ``device``/``threadgroup`` memory is dropped;
- program-scope variables outside ``constant`` (checked here, in Python).

Clang's address-space numbers are renamed to MSL's words in the messages.
A pass that succeeds is remembered on disk, like compiled objects.

Example:
    >>> rewrite_casts("a = (device float*)c[1] + 2;")
    'a = __emu_as_cast<device float*>(c[1]) + 2;'
    >>> rewrite_unroll("#pragma unroll N\\nfor (;;) {}")
    '#pragma unroll (::metal::__emu_unroll_count<(N)>())\\nfor (;;) {}'
"""

from __future__ import annotations

import re

from . import compiler
from ._tokens import TOKEN as _TOKEN
from ._tokens import significant

STRICT_FLAGS = [
    "-fsyntax-only",
    "-DEMU_STRICT=1",
    "-Wimplicit-float-conversion",
    "-Wno-duplicate-decl-specifier",
    "-ferror-limit=0",
]
_SPACES = ("device", "constant", "threadgroup", "thread")
_SPACE_NAMES = {"1": "device", "2": "constant", "3": "threadgroup"}
# Words after which `(` opens an expression, not a call's arguments.
_BEFORE_EXPRESSION = {"return", "else", "do", "case", "throw", "co_return", "co_yield"}
_KERNEL_START = '#line 1 "kernel.metal"\n'
_ENTRY_START = '#line 1 "<emulator entry point>"\n'


def _group_end(toks, i):
    """``toks[i]`` opens a bracket; the index just past its match."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = [pairs[toks[i]]]
    i += 1
    while i < len(toks) and stack:
        if toks[i] in pairs:
            stack.append(pairs[toks[i]])
        elif toks[i] == stack[-1]:
            stack.pop()
        i += 1
    return i


def _operand_end(toks, i):
    """The end of the cast-expression starting at ``toks[i]`` (prefix operators, a
    primary, postfix operators), or -1 when it is not one this pass follows."""
    i = significant(toks, i)
    while i < len(toks) and toks[i] in "&*-+!~":
        i = significant(toks, i + 1)
    if i >= len(toks):
        return -1
    if toks[i] == "(":
        i = _group_end(toks, i)
        nxt = significant(toks, i)
        if nxt < len(toks) and (toks[nxt] == "(" or toks[nxt][:1].isalnum() or toks[nxt][:1] == "_"):
            return _operand_end(toks, nxt)  # that group was itself a cast
    elif toks[i][:1].isalnum() or toks[i][:1] in "_.":
        i += 1
        while (
            significant(toks, i) + 1 < len(toks)
            and toks[significant(toks, i)] == ":"
            and toks[significant(toks, i) + 1] == ":"
        ):
            i = significant(toks, significant(toks, i) + 2) + 1
    else:
        return -1
    while True:
        j = significant(toks, i)
        if j < len(toks) and toks[j] in "([":
            i = _group_end(toks, j)
        elif j < len(toks) and toks[j] == ".":
            i = significant(toks, j + 1) + 1
        elif j + 1 < len(toks) and toks[j] == "-" and toks[j + 1] == ">":
            i = significant(toks, j + 2) + 1
        else:
            return i


def rewrite_casts(text: str) -> str:
    """``(device T*)expr`` (any address space) becomes ``__emu_as_cast<device T*>(expr)``,
    keeping line breaks; the shim's checked cast refuses a change of address space."""
    toks = _TOKEN.findall(text)
    out, i = [], 0
    while i < len(toks):
        if toks[i] == "(":
            end = _group_end(toks, i)
            inner = [t for t in toks[i + 1 : end - 1] if not t.isspace()]
            prev = next((t for t in reversed(out) if not t.isspace()), "")
            callee = (prev[:1].isalnum() or prev[:1] == "_") and prev not in _BEFORE_EXPRESSION
            is_cast = (
                inner
                and inner[-1] == "*"
                and any(w in _SPACES for w in inner)
                and "(" not in inner
                and not callee
                and prev not in (")", "]")
            )
            if is_cast:
                stop = _operand_end(toks, end)
                operand = "".join(toks[end:stop]) if stop > 0 else ""
                if operand.strip() and not operand.strip().startswith("__emu_"):
                    out.append(f"__emu_as_cast<{''.join(toks[i + 1 : end - 1])}>(")
                    out.append(rewrite_casts(operand) + ")")
                    i = stop
                    continue
        out.append(toks[i])
        i += 1
    return "".join(out)


_UNROLL = re.compile(r"^([ \t]*#[ \t]*pragma[ \t]+unroll)\b[ \t]*(\S[^\n]*?)[ \t]*$", re.M)


def rewrite_unroll(text: str) -> str:
    """``#pragma unroll N`` with a count checks at compile time that ``N`` is not 0."""
    return _UNROLL.sub(lambda m: f"{m[1]} (::metal::__emu_unroll_count<({m[2]})>())", text)


_SCOPE_OPENERS = {"namespace", "extern"}
_NOT_VARIABLES = {
    "typedef",
    "using",
    "template",
    "struct",
    "class",
    "enum",
    "union",
    "namespace",
    "static_assert",
    "constant",
    "constexpr",
    "extern",
}


def program_scope_errors(kernel_source: str, signature_line: int) -> list[str]:
    """Clang-style errors for program-scope variables outside ``constant`` in the text
    before the kernel's signature (the ``header``), where Metal allows only those.

    Example:
        >>> text = "constant float k = 1;\\nthreadgroup float buf[32];\\n[[kernel]] void f(\\n"
        >>> program_scope_errors(text, 2)
        ['kernel.metal:2:1: error: program scope variable must reside in constant address space (Metal)']
    """
    head = "\n".join(kernel_source.split("\n")[: signature_line + 1])
    cut = head.rfind("[[kernel]]")
    head = head[:cut] if cut >= 0 else head
    head = re.sub(r"^[ \t]*#[^\n]*", "", head, flags=re.M)  # preprocessor lines declare nothing
    toks = _TOKEN.findall(head)
    errors, stmt, line, depth_stack = [], [], 1, []
    for tok in toks:
        if tok.startswith(("//", "/*")) or tok.isspace():
            line += tok.count("\n")
            continue
        if depth_stack and depth_stack[-1] == "skip":
            if tok in "{":
                depth_stack.append("skip")
            elif tok == "}":
                depth_stack.pop()
            continue
        if tok == "{":
            words = [w for w, _ in stmt]
            scope = bool(words) and words[0] in _SCOPE_OPENERS and "=" not in words
            depth_stack.append("scope" if scope else "skip")
            if scope or (words and "=" not in words and "(" in words):
                stmt = []  # a namespace opens a scope; a function body ends the declaration
            continue
        if tok == "}":
            if depth_stack:
                depth_stack.pop()
            stmt = [] if not stmt or stmt[0][0] != "struct" else stmt
            continue
        if tok == ";":
            words = [w for w, _ in stmt]
            if words and not (_NOT_VARIABLES & set(words)) and words[0] != "static_assert":
                first_paren = words.index("(") if "(" in words else len(words)
                first_eq = words.index("=") if "=" in words else len(words)
                if first_eq < first_paren or first_paren == len(words):
                    where = stmt[0][1]
                    errors.append(
                        f"kernel.metal:{where}:1: error: program scope variable must reside in "
                        f"constant address space (Metal)"
                    )
            stmt = []
            continue
        stmt.append((tok, line))
        line += tok.count("\n")
    return errors


_DIAG = re.compile(r"^(?P<loc>[^\s:][^:\n]*:\d+:\d+): (?P<kind>fatal error|error|warning|note): (?P<msg>.*)$")
_IMPLICIT_SPECIAL = re.compile(
    r"candidate (?:constructor|function) \(the implicit (?:copy|move) "
    r"(?:constructor|assignment operator)\) not viable: (?P<why>.*)"
)


def _groups(diagnostics: str):
    """Clang's output as [kind, first line, lines] per error or warning (notes attached)."""
    groups = []
    for ln in diagnostics.split("\n"):
        if re.fullmatch(r"\d+ (?:warnings?|errors?)( and \d+ errors?)? generated\.", ln.strip()):
            continue
        m = _DIAG.match(ln)
        if m and m["kind"] != "note":
            groups.append([m["kind"], ln, [ln]])
        elif groups:
            groups[-1][2].append(ln)
    return groups


# A struct object (not a pointer) in an address space that clang cannot convert:
# its aggregate initialisation after the refused copy. A real error of this
# kind fails the build that runs (no address spaces) too.
_OBJECT_CONVERSION = re.compile(
    r"error: no viable conversion from '(?:const )?(?:device|threadgroup|constant|"
    r"__attribute__\(\(address_space\(\d\)\)\)) [^'*&]*'"
)


def _struct_copy_only(lines) -> bool:
    """An error that is only clang's address-space rule on a struct's implicit copy or move."""
    if _OBJECT_CONVERSION.search(lines[0]):
        return True
    reasons = [m["why"] for ln in lines if (m := _IMPLICIT_SPECIAL.search(ln))]
    if not reasons:
        return False
    # Copying a struct from or into any address space is valid MSL, except
    # assigning into constant memory.
    return all("address space" in r and "'this' object is in address space '2'" not in r for r in reasons)


def metal_words(text: str) -> str:
    """Clang's address-space numbers and type names as MSL spells them.

    Example:
        >>> metal_words("'__attribute__((address_space(2))) float *' in address space '3' from generic address space")
        "'constant float *' in address space 'threadgroup' from thread address space"
    """
    text = re.sub(r"__attribute__\(\(address_space\((\d)\)\)\)", lambda m: _SPACE_NAMES.get(m[1], m[0]), text)
    text = re.sub(r"address space '(\d)'", lambda m: f"address space '{_SPACE_NAMES.get(m[1], m[1])}'", text)
    return text.replace("generic address space", "thread address space").replace("'__bf16'", "'bfloat'")


_BF16_ERROR = "error: implicit conversion to bfloat is not allowed in Metal (write bfloat(x) or static_cast<bfloat>(x)): "
# An AST node's first source location: `<kernel.metal:12:3`, `<line:12:3` or `<col:3` (same line).
_AST_LOCATION = re.compile(r"<(?:(?:kernel\.metal|line):(\d+):|col:)")


_EXPLICIT_CAST = re.compile(r"\b(?:CXXFunctionalCastExpr|CStyleCastExpr|CXXStaticCastExpr)\b")


def _parent(lines, k):
    """The AST dump line of node ``k``'s parent: the nearest line above it indented less."""
    depth = len(lines[k]) - len(lines[k].lstrip("| `-"))
    for text in reversed(lines[:k]):
        if len(text) - len(text.lstrip("| `-")) < depth:
            return text
    return ""


def implicit_bfloat_casts(ast: str) -> list[str]:
    """Every implicit float (or double) to bfloat conversion in a clang ``-ast-dump`` text.

    Example:
        >>> dump = ("|-VarDecl 0x1 <kernel.metal:4:3, col:16> col:14 x 'bfloat':'__bf16' cinit\\n"
        ...         "| `-ImplicitCastExpr 0x2 <col:16> 'bfloat':'__bf16' <FloatingCast>\\n"
        ...         "|   `-FloatingLiteral 0x3 <col:16> 'float' 0.000000e+00\\n")
        >>> implicit_bfloat_casts(dump)  # doctest: +ELLIPSIS
        ["kernel.metal:4: error: implicit conversion to bfloat ...: 'float' to 'bfloat'"]
    """
    found, line, lines = [], 0, ast.splitlines()
    for k, text in enumerate(lines):
        m = _AST_LOCATION.search(text)
        if m and m[1]:
            line = int(m[1])
        if "ImplicitCastExpr" not in text or "<FloatingCast>" not in text or "__bf16'" not in text:
            continue
        if _EXPLICIT_CAST.search(_parent(lines, k)):
            continue  # bfloat(x), (bfloat)x, static_cast<bfloat>(x): clang puts the conversion below
        source = re.search(r"'([^']*)'", lines[k + 1]) if k + 1 < len(lines) else None
        if source and source[1] in ("float", "double", "const float", "const double"):
            found.append(f"kernel.metal:{line}: {_BF16_ERROR}'{source[1]}' to 'bfloat'")
    return found


def verdict(returncode: int, diagnostics: str, ast: str = "") -> list[str]:
    """The errors Metal would report, from the strict pass's clang output (and AST dump).

    Example:
        >>> verdict(0, "kernel.metal:3:7: warning: implicit conversion loses floating-point precision: "
        ...         "'float' to '__bf16' [-Wimplicit-float-conversion]")  # doctest: +ELLIPSIS
        ["kernel.metal:3:7: error: implicit conversion to bfloat is not allowed in Metal ...'float' to 'bfloat'..."]
    """
    groups = _groups(diagnostics)
    if returncode and not any(kind != "warning" for kind, _, _ in groups):
        return [diagnostics.strip() or f"clang exited with {returncode}"]
    kept = []
    for kind, first, lines in groups:
        if kind == "warning":
            if "[-Wimplicit-float-conversion]" in first and re.search(r"to '[^']*(?:bfloat|__bf16)", first):
                msg = first.replace("warning: ", _BF16_ERROR, 1)
                kept.append("\n".join([msg] + lines[1:]))
        elif not _struct_copy_only(lines):
            kept.append("\n".join(lines))
    # The AST also finds exact constants, which clang does not warn about; a line the
    # warning already reported is not reported twice.
    warned = {m[1] for k in kept for m in [re.match(r"kernel\.metal:(\d+):", k)] if m}
    kept += [e for e in implicit_bfloat_casts(ast) if e.split(":")[1] not in warned]
    return [metal_words(k) for k in kept]


def strict_unit(tu: str) -> str:
    """The strict pass's translation unit: the kernel part of ``tu`` rewritten."""
    start = tu.index(_KERNEL_START) + len(_KERNEL_START)
    end = tu.index(_ENTRY_START)
    return tu[:start] + rewrite_casts(rewrite_unroll(tu[start:end])) + tu[end:]


def check(tu: str, kernel_source: str, signature_line: int, flags: list[str]) -> None:
    """Run the strict pass on translation unit ``tu`` (built with ``flags``).

    Example:
        >>> from mlx_embag.emulator import compiler, translate
        >>> text = ("[[kernel]] void k(\\n  const constant float* c [[buffer(0)]],\\n"
        ...         "  device float* out [[buffer(1)]]) {\\n  c[0] = 1.0f;\\n}\\n")
        >>> tu, parsed, _ = translate.translation_unit("k", text)
        >>> try:
        ...     check(tu, text, parsed.lines_before_signature, compiler.kernel_flags("safe", False))
        ... except compiler.CompileError as e:
        ...     print(str(e).splitlines()[0])
        kernel.metal:4:8: error: read-only variable is not assignable

    Raises:
        compiler.CompileError: with the errors Metal would report.
    """
    errors = program_scope_errors(kernel_source, signature_line)
    if errors:
        raise compiler.CompileError("\n".join(errors))
    flags = [f for f in flags if f not in ("-shared", "-fPIC")] + STRICT_FLAGS
    kernel = re.search(r"\[\[kernel\]\]\s*void\s+(\w+)", kernel_source)
    if kernel:  # dump the kernel function's AST (syntax only still): see implicit_bfloat_casts
        flags += ["-Xclang", "-ast-dump", "-Xclang", f"-ast-dump-filter={kernel[1]}"]
    errors = compiler.syntax_check(strict_unit(tu), flags, verdict)
    if errors:
        raise compiler.CompileError("\n".join(errors))
