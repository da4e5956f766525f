"""MVBench prompt, answer parsing, the official check_ans (with its quirk) and the strict rule."""

import pytest

from iv2_chat import (
    MVBENCH_SYSTEM,
    check_answer,
    check_answer_strict,
    mvbench_answer,
    mvbench_prediction,
    mvbench_prompt,
    predicted_letter,
)


def test_prompt_is_the_official_mistral_one():
    p = mvbench_prompt("What moves?", ["a circle", "a square"])
    assert p.text == (
        MVBENCH_SYSTEM + "[INST] <Video>[<VID_PLH>]</Video> [/INST] [INST] Question: What moves?\nOptions:\n"
        "(A) a circle\n(B) a square\nOnly give the best option. [/INST] Best option:("
    )
    assert p.instruction == MVBENCH_SYSTEM  # the system prompt is also the QFormer's instruction
    assert MVBENCH_SYSTEM.startswith("Carefully watch the video") and MVBENCH_SYSTEM.endswith("question.\n")
    with pytest.raises(ValueError, match="candidates"):
        mvbench_prompt("q", ["only one"])


def test_ground_truth_and_prediction_strings():
    assert mvbench_answer(["left", "right", "up"], "up") == "(C) up"
    assert mvbench_prediction("B) a square\nbecause it is red</s>junk") == "(B) a square"
    assert mvbench_prediction("  A) left  ") == "(A) left"
    assert mvbench_prediction("") == "("


@pytest.mark.parametrize(("pred", "official", "strict"), [
    ("(B) a square", True, True),
    ("(b) something else", True, True),
    ("(B.", True, False),
    ("(A) a circle", False, False),
    ("(", True, False),     # the quirk: "(" is a substring of "(b)"
    ("", True, False),      # and so is ""
    ("(C)", False, False),
])
def test_official_and_strict_scoring(pred, official, strict):
    gt = "(B) a square"
    assert check_answer(pred, gt) is official
    assert check_answer_strict(pred, gt) is strict


def test_letter_parsing():
    assert predicted_letter("(c) up") == "C"
    assert predicted_letter("( D )") == "D"
    assert predicted_letter("D) up") is None
    with pytest.raises(ValueError, match="ground truth"):
        check_answer_strict("(A)", "A")
