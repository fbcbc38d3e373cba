"""The code probes on hand-written snippets: every character's expected value, written out under the text."""

import numpy as np
import pytest

from charrnn.inspection.code import (
    guess_language,
    if_body_depth,
    in_if,
    in_string,
    language_of,
    lexical_classes,
)


def marks(values: np.ndarray) -> str:
    return "".join(str(min(int(v), 9)) for v in values)


@pytest.mark.parametrize("text, expected", [
    ("x = 'a' + \"b\"\n", "00001100001100"),
    ('s = "it\\"s"\n', "000011111100"),  # an escaped quote does not close
    ("r = r'\\'' + rb\"\\\\\"\n", "0000011100000011100"),  # raw strings: prefixes outside, \\' still escaped
    ('d = """one\n\ntwo"""\n', "0000111111111110000"),  # triple quotes span lines, blank ones too
    ("# it's a comment\nq = 'x'\n", "0000000000000000000001100"),  # a quote in a comment opens nothing
    ("u = 'open\nv = 1\n", "0000111110000000"),  # a one-line string left open ends with its line
    ('f"{x}" if s else ""\n', "011110000000000001000"[:20]),
])
def test_python_strings(text, expected):
    assert marks(in_string(text, "python")) == expected


@pytest.mark.parametrize("text, expected", [
    ('s = "a\\"b";\n', "000011111000"),
    ("c = '\"'; d = '\\'';\n", "0000110000000111000"),  # character literals, with a quote and an escape inside
    ('/* "not" */ x = "y"; // "no"\n', "00000000000000001100000000000"),  # comments are not strings
])
def test_c_strings(text, expected):
    assert marks(in_string(text, "c")) == expected


def test_c_conditions_match_nested_parentheses_and_skip_strings_and_comments():
    text = 'if (f(a) && (b)) x = "if (y)"; /* if (z) */ while (w) {}\n'
    expected = "000111111111111000000000000000000000000000000000000000000"
    assert marks(in_if(text, "c")) == expected
    assert marks(in_if("#if defined(X)\nelse if(q) y;\n", "c")) == "00000000000000000000001100000"


def test_c_if_body_depth_counts_braced_if_and_else_blocks_only():
    text = "if (a) { x; if (b) {y;} } else { for (;;) { z; } }\n"
    expected = "000000011111111111122211000000011111111111111111100"
    assert marks(if_body_depth(text, "c")) == expected


def test_python_conditions_run_to_the_colon_outside_brackets_and_strings():
    text = "if d[a:b] and 'x:' in s:\n    pass\nelif (c and\n      e):\n    y = z if w else v\n"
    got = marks(in_if(text, "python"))
    assert got[:24] == "001111111111111111111110"
    line3 = text.index("elif")
    assert got[line3 : line3 + 4] == "0000"
    assert set(got[line3 + 4 : text.index("):") + 1]) == {"1"}  # the condition goes on over the line break
    assert set(got[text.index("    y") :]) == {"0"}  # a conditional expression is no if statement


def test_python_if_body_depth_follows_indentation():
    text = ("if a:\n"          # 0 up to the colon, then 1 for the newline
            "    x = 1\n"      # 1
            "\n"               # a blank line keeps the depth
            "    if b: y\n"    # 1 up to the colon, then 2 for the one-line body, which ends with its line
            "    # note\n"     # a comment line keeps the depth
            "z = 2\n"          # 0
            "for i in r:\n"    # 0
            "    pass\n"       # 0: a for is no if
            "else:\n"          # 0: the else of a for neither
            "    q\n")         # 0
    joined = marks(if_body_depth(text, "python"))
    starts = np.cumsum([0] + [len(line) + 1 for line in text.splitlines()])
    per_line = [joined[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
    assert per_line[0] == "000001"
    assert per_line[1] == "1111111111"
    assert per_line[2] == "1"
    assert per_line[3] == "111111111222"
    assert per_line[4] == "11111111111"
    assert all(set(line) == {"0"} for line in per_line[5:])


def test_the_language_comes_from_the_name_then_the_text():
    assert language_of("x/kvm_main.c", "") == "c"
    assert language_of("argparse.py", "") == "python"
    assert language_of("notes.txt", "import os\n\ndef f():\n    return 1\n" * 20) == "python"
    assert language_of("notes.c", "", override="python") == "python"
    assert guess_language("It was the best of times, it was the worst of times.\n" * 50) is None
    assert guess_language("#include <stdio.h>\nint main() {\n  return 0;\n}\n" * 20) == "c"
    assert not in_string("say \"hi\"\n", None).any()  # prose: the code probes never fire


def test_comments_and_strings_never_overlap():
    text = "x = '#' # it's\n/* no */\n"
    string, comment = lexical_classes(text, "python")
    assert not (string & comment).any()
    assert marks(comment)[8:14] == "111111"
