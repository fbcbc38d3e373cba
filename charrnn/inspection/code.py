"""Probes that understand code: string literals, if conditions and if-block depth, for Python and C-like text.

Like every probe, each gives the value *after* each character. A text is first split into string
literals, comments and the rest (code) by a small tokenizer of its language; the if probes look
only at code, so `if (` inside a string or a comment is no condition.

- in_string (binary): inside a string literal. Python: '...', "...", triple-quoted strings that
  span lines (blank lines included), with any prefix (r, b, f, u, rb, ...: the prefix letters are
  outside, the string starts at its quote), and backslash escapes (in raw strings too, as Python
  reads them: r"\\"" is one string). C-like: "..." with escapes, and character literals '...'.
  The opening quote (all three of a triple quote) is inside, the closing one outside. A one-line
  string left open ends at its line's end. Comments (`#` in Python; `//` and `/* */` in C) are not
  strings, and a quote inside a comment opens nothing.
- in_if (binary): inside the condition of an if. C-like: from the `(` after `if` to the character
  before its matching `)`. Python: from the character after `if` or `elif` (at the start of a
  statement) to the character before the colon that ends the condition, which is the first colon
  outside brackets and strings.
- if_body_depth (counter): how many if-blocks enclose the character. C-like: braced blocks that
  follow an if's condition or an `else` (an opening brace counts itself, a closing one does not;
  an unbraced body is not counted). Python: the indented blocks of `if`, `elif` and an `else` that
  follows one of them, from the character after the header's colon (a body on the header's own line,
  `if x: y`, ends with that line); blank lines and comment lines keep the depth, and a continuation
  line (inside brackets or a string) keeps its statement's.

The language comes from the file name (`language_of`), `--lang` overrides it, and text whose
name says nothing is guessed from its content (`guess_language`). On prose these probes are zero
everywhere, so the ranking reports them as never firing.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

PYTHON, C = "python", "c"
LANGUAGES = (PYTHON, C)
_SUFFIXES = {PYTHON: {".py", ".pyw", ".pyi"},
             C: {".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".java", ".js", ".ts", ".go", ".rs", ".cs",
                 ".swift", ".kt", ".m", ".scala", ".php"}}
_IDENT = re.compile(r"\w")
_PY_HEADER = re.compile(r"(if|elif|else|for|while|try|except|finally|with|def|class|async)\b")


def language_of(path: Path | str | None, text: str, override: str | None = None) -> str | None:
    """'python', 'c' or None (prose): `override`, else the file's suffix, else a guess from the text."""
    if override is not None:
        return override
    suffix = Path(path).suffix.lower() if path is not None else ""
    for language, suffixes in _SUFFIXES.items():
        if suffix in suffixes:
            return language
    return guess_language(text)


def guess_language(text: str) -> str | None:
    """Python or C-like when the text looks like it (a few telling lines per thousand characters), else None."""
    python = len(re.findall(r"^[ \t]*(def \w+\(|class \w+|import \w|from [\w.]+ import |elif |except\b|return\b)"
                            r"|\bself\.", text, re.M))
    c_like = len(re.findall(r";[ \t]*$|\{[ \t]*$|^[ \t]*#include\b|^[ \t]*\}", text, re.M))
    if max(python, c_like) * 1000 < 2 * max(len(text), 1):
        return None
    return PYTHON if python > c_like else C


def lexical_classes(text: str, language: str) -> tuple[np.ndarray, np.ndarray]:
    """(string, comment) masks: 1 inside a string literal (see in_string), 1 inside a comment."""
    string, comment = np.zeros(len(text), np.int64), np.zeros(len(text), np.int64)
    i, n = 0, len(text)
    while i < n:
        if text.startswith("#" if language == PYTHON else "//", i):
            end = _line_end(text, i)
            comment[i:end] = 1
            i = end
        elif language == C and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            comment[i:end] = 1
            i = end
        elif text[i] in "'\"":
            i = _string(text, i, language, string)
        else:
            i += 1
    return string, comment


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _string(text: str, i: int, language: str, string: np.ndarray) -> int:
    """Mark the literal that opens at `i` (opening quote inside, closing outside); returns where code resumes."""
    quote = text[i]
    delim = quote * 3 if language == PYTHON and text.startswith(quote * 3, i) else quote
    j = i + len(delim)
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text.startswith(delim, j):
            string[i:j] = 1
            return j + len(delim)
        elif text[j] == "\n" and len(delim) == 1:
            break  # a one-line string left open ends with its line
        else:
            j += 1
    j = min(j, len(text))
    string[i:j] = 1
    return j


def code_probes(text: str, language: str | None) -> dict[str, np.ndarray]:
    """in_string, in_if and if_body_depth of `text`, from one pass of the tokenizer (all zero for prose)."""
    if language is None:
        return {name: np.zeros(len(text), np.int64) for name in ("in_string", "in_if", "if_body_depth")}
    string, comment = lexical_classes(text, language)
    code = (string == 0) & (comment == 0)
    condition, depth = (_c_ifs if language == C else _python_ifs)(text, code)
    return {"in_string": string, "in_if": condition, "if_body_depth": depth}


def in_string(text: str, language: str | None) -> np.ndarray:
    """1 inside a string literal of `language`, see the module doc."""
    return code_probes(text, language)["in_string"]


def in_if(text: str, language: str | None) -> np.ndarray:
    """1 inside an if's condition, see the module doc."""
    return code_probes(text, language)["in_if"]


def if_body_depth(text: str, language: str | None) -> np.ndarray:
    """How many if-blocks enclose each character, see the module doc."""
    return code_probes(text, language)["if_body_depth"]


def _keyword_at(text: str, i: int, word: str, code: np.ndarray) -> bool:
    """Whether the keyword `word` stands at `i`, in code, as a whole word."""
    end = i + len(word)
    return (text.startswith(word, i) and bool(code[i]) and (i == 0 or not _IDENT.match(text[i - 1]))
            and (end == len(text) or not _IDENT.match(text[end])))


def _skip_space(text: str, i: int, code: np.ndarray) -> int:
    """The next position at or after `i` that holds code other than whitespace (comments are skipped too)."""
    while i < len(text) and (text[i].isspace() or not code[i]):
        i += 1
    return i


def _matching(text: str, start: int, code: np.ndarray, pair: str = "()") -> int:
    """The index of the bracket that closes the one at `start` (len(text) when it never closes)."""
    depth = 0
    for j in range(start, len(text)):
        if code[j] and text[j] == pair[0]:
            depth += 1
        elif code[j] and text[j] == pair[1]:
            depth -= 1
            if depth == 0:
                return j
    return len(text)


def _c_ifs(text: str, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inside, blocks = np.zeros(len(text), np.int64), set()
    for match in re.finditer(r"\b(if|else)\b", text):
        i, word = match.start(), match.group()
        if not _keyword_at(text, i, word, code) or text[:i].rstrip(" \t").endswith("#"):  # `#if`, `#else`
            continue
        after = _skip_space(text, i + len(word), code)
        if word == "if":
            if after >= len(text) or text[after] != "(":
                continue
            close = _matching(text, after, code)
            inside[after:close] = 1
            after = _skip_space(text, close + 1, code)
        if after < len(text) and text[after] == "{":
            blocks.add(after)
    depth, stack, out = 0, [], np.zeros(len(text), np.int64)
    for j, ch in enumerate(text):
        if code[j] and ch == "{":
            stack.append(j in blocks)
            depth += j in blocks
        elif code[j] and ch == "}" and stack:
            depth -= stack.pop()
        out[j] = depth
    return inside, out


def _python_ifs(text: str, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inside, out = np.zeros(len(text), np.int64), np.zeros(len(text), np.int64)
    brackets = np.cumsum([(1 if ch in "([{" else -1 if ch in ")]}" else 0) if code[j] else 0
                          for j, ch in enumerate(text)]) if text else np.zeros(0, np.int64)
    stack: list[int] = []  # the indents of the open if-blocks
    last_header: dict[int, str] = {}  # indent -> the keyword of the last statement there
    pending: list[tuple[int, int]] = []  # (colon, indent) of if headers whose colon is still ahead
    start = 0
    while start < len(text):
        end = _line_end(text, start)
        stripped = text[start:end].lstrip(" \t")
        indent = end - start - len(stripped)
        logical = code[start] and (start == 0 or brackets[start - 1] <= 0) and stripped[:1] not in ("", "#")
        if logical:
            while stack and stack[-1] >= indent:
                stack.pop()
            header = _python_header(text, start + indent, code, brackets, inside)
            if header is not None:
                keyword, colon = header
                counts = keyword in ("if", "elif") or (keyword == "else" and last_header.get(indent) == "if")
                last_header[indent] = "if" if keyword in ("if", "elif") else keyword
                if counts:
                    pending.append((colon, indent))
            else:
                last_header[indent] = ""
        out[start : end + 1] = len(stack)
        while pending and pending[0][0] <= end:
            colon, block_indent = pending.pop(0)
            rest = text[colon + 1 : end].strip()
            if rest and not rest.startswith("#"):  # `if x: y`: the body is the rest of this line
                out[colon + 1 : end + 1] = len(stack) + 1
            else:
                stack.append(block_indent)
                out[colon + 1 : end + 1] = len(stack)
        start = end + 1
    return inside, out


def _header_colon(text: str, start: int, code: np.ndarray, brackets: np.ndarray, base: int) -> int | None:
    """The colon that ends a header: the first outside brackets and strings, before its logical line ends."""
    for j in range(start, len(text)):
        if code[j] and brackets[j] == base:
            if text[j] == ":":
                return j
            if text[j] == "\n" and text[j - 1] != "\\":
                return None
    return None


def _python_header(text: str, at: int, code: np.ndarray, brackets: np.ndarray,
                   inside: np.ndarray) -> tuple[str, int] | None:
    """(keyword, index of its colon) when a compound statement starts at `at`; an if's condition goes in `inside`."""
    match = _PY_HEADER.match(text, at)
    if match is None or not _keyword_at(text, at, match.group(1), code):
        return None
    keyword, base = match.group(1), brackets[at - 1] if at else 0
    colon = _header_colon(text, match.end(), code, brackets, base)
    if colon is None:
        return None
    if keyword in ("if", "elif"):
        inside[match.end() : colon] = 1
    return keyword, colon
