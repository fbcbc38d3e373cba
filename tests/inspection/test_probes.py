"""The probes (quotes, lines, brackets, indents, comments, regexes) and how cells are ranked against them."""

import numpy as np
import pytest

from charrnn.errors import UserError
from charrnn.inspection.activations import Activations
from charrnn.inspection.probes import (
    BINARY,
    COUNTER,
    Probe,
    average_ranks,
    bracket_depth,
    in_comment,
    in_quote,
    indent_depth,
    line_position,
    make_probes,
    parse_probe,
    rank_probes,
    regex_values,
    scores,
)


def marks(values: np.ndarray) -> str:
    """A probe's values as a string of digits, to line up under the text in an assertion."""
    return "".join(str(v) for v in values)


def test_in_quote_marks_the_opening_quote_and_not_the_closing_one():
    assert marks(in_quote('a "bc" d')) == "00111000"
    assert marks(in_quote("x \u201cyz\u201d w")) == "00111000"


def test_in_quote_ends_at_a_blank_line_so_an_open_paragraph_does_not_invert_the_rest():
    text = '"Go on\n\n"and on" x'
    assert marks(in_quote(text)) == "111111" + "10" + "11111110" + "00"


def test_in_quote_spans_lines_within_a_paragraph():
    assert marks(in_quote('"a\nb" c')) == "1111000"


def test_line_position_counts_from_each_newline():
    assert marks(line_position("ab\ncde\n\nf")) == "12" + "0123" + "0" + "01"


def test_bracket_depth_nests_across_kinds_and_ignores_unmatched_closers():
    assert marks(bracket_depth("f([a]{b})")) == "012212210"
    assert marks(bracket_depth(")a(b")) == "0011"
    assert len(bracket_depth("")) == 0


def test_indent_depth_counts_leading_whitespace_and_holds_to_the_end_of_the_line():
    text = "a\n  if x:\n\t  y\n"
    assert marks(indent_depth(text)) == "00" + "1222222" + "0" + "12330"


@pytest.mark.parametrize("text, expected", [
    ("x # c\ny", "00111" + "00"),            # a hash comment stops before its newline
    ("a // b\nc", "000111" + "00"),          # `//` is certain from its second slash
    ("a /* b\nc */ d", "000111" + "1111" + "0" + "00"),  # a block spans lines and ends after its `*/`
    ("/*/ x */", "01111110"),                 # `/*/` does not close the block it opens
    ("/**//x", "011000"),                     # the closing `/` does not begin a `//`
    ("/* # */x", "01111100"),                 # markers inside a comment change nothing
])
def test_in_comment_of_each_kind(text, expected):
    assert marks(in_comment(text)) == expected


def test_regex_probe_marks_characters_inside_matches():
    name, pattern = parse_probe("in_cond=if [^:]*:")
    assert name == "in_cond"
    assert marks(regex_values(pattern, "x if a: b if c:")) == "00" + "11111" + "000" + "11111"
    assert not regex_values(parse_probe("empty=a*")[1], "bbb").any()  # empty matches mark nothing


@pytest.mark.parametrize("spec, message", [
    ("novalue", "NAME=REGEX"),
    ("1x=a", "NAME=REGEX"),
    ("in_quote=a", "built-in"),
    ("bad=(", "invalid regex"),
])
def test_bad_user_probes_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message) as e:
        parse_probe(spec)
    assert "\n" not in str(e.value)


def test_make_probes_names_and_kinds():
    probes = make_probes('a "b"\n', {"vowel": parse_probe("vowel=[aeiou]")[1]})
    assert [(p.name, p.kind) for p in probes] == [
        ("in_quote", BINARY), ("line_position", COUNTER), ("bracket_depth", COUNTER), ("indent_depth", COUNTER),
        ("in_comment", BINARY), ("in_string", BINARY), ("in_if", BINARY), ("if_body_depth", COUNTER),
        ("vowel", BINARY)]
    assert all(len(p.values) == 6 for p in probes)


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])
    columns = average_ranks(np.array([[1.0, 5.0], [1.0, 4.0], [0.0, 4.0]]))
    np.testing.assert_array_equal(columns, [[2.5, 3], [2.5, 1.5], [1, 1.5]])


def test_auroc_is_sign_free_and_handles_ties():
    labels = np.array([0, 0, 1, 1])
    cells = np.array([[0.1, 0.9, 0.5, 0.2, 0.1], [0.2, 0.8, 0.5, 0.35, 0.5], [0.8, 0.2, 0.5, 0.4, 0.5],
                      [0.9, 0.1, 0.5, 0.3, 0.9]])
    got = scores(average_ranks(cells), labels, BINARY)
    # separates, separates inverted, all tied (chance), 3 of 4 pairs ordered, 3 ordered and one tied
    np.testing.assert_allclose(got, [1.0, 1.0, 0.5, 0.75, 0.875])


def test_spearman_is_absolute_and_rank_based():
    target = np.array([0, 1, 2, 3, 4])
    cells = np.stack([target ** 3, -target, np.ones(5), [0, 2, 1, 4, 3]], axis=1).astype(float)
    got = scores(average_ranks(cells), target, COUNTER)
    np.testing.assert_allclose(got, [1.0, 1.0, 0.0, 0.8])


def test_a_constant_probe_has_no_score():
    assert scores(average_ranks(np.random.rand(6, 3)), np.zeros(6, int), BINARY) is None
    assert scores(average_ranks(np.random.rand(6, 3)), np.full(6, 2), COUNTER) is None


def fake(signals: dict[str, np.ndarray]) -> Activations:
    length = next(iter(signals.values())).shape[1]
    return Activations("lstm", signals, np.zeros((length, 2), np.float32), ())


def test_the_best_cell_is_chosen_on_the_first_half_and_scored_on_the_second():
    rng = np.random.default_rng(0)
    probe = np.tile([0, 1], 50)
    cells = rng.normal(size=(1, 100, 3))
    cells[0, :50, 0] += 5 * probe[:50]  # tracks the probe on the first half only: chosen, then fails
    cells[0, :, 1] += 0.5 * probe  # tracks it weakly throughout
    acts = fake({"h": cells})
    (result,) = rank_probes(acts, [Probe("p", BINARY, probe)], control=fake({"h": rng.normal(size=(1, 100, 3))}))
    assert (result.signal, result.layer, result.cell) == ("h", 0, 0)
    assert result.score < 0.75  # the held-out half shows the first-half pick was luck
    assert 0.5 <= result.control < 0.8


def test_probes_that_never_fire_or_are_constant_on_a_half_are_undefined_not_errors():
    acts = fake({"h": np.random.default_rng(0).normal(size=(2, 10, 4))})
    never = Probe("never", BINARY, np.zeros(10, np.int64))
    late = Probe("late", COUNTER, np.array([0] * 6 + [1, 2, 3, 4]))
    early = Probe("early", BINARY, np.array([1, 0, 1, 0, 0] + [0] * 5))
    results = {r.name: r for r in rank_probes(acts, [never, late, early])}
    assert results["never"].score is None
    assert results["never"].note == "never fires on the text"
    assert results["late"].score is None
    assert "first half" in results["late"].note
    assert results["early"].score is None
    assert "second half" in results["early"].note
    assert results["never"].to_dict()["score"] is None
