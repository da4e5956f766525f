"""MVBench-style multiple-choice QA: the official Mistral prompt, answer parsing and scoring.

Prompt (Ask-Anything ``demo_mistral`` / MVBench evaluation), with "Best option:(" pre-filled in the answer
turn so that the next generated token is the option letter, and the system prompt also given to the QFormer
(one line, broken here)::

    {system}[INST] <Video>[<VID_PLH>]</Video> [/INST]
    [INST] {question block}\\nOnly give the best option. [/INST] Best option:(

Only the first segment is tokenised with special tokens (one BOS). Decoding is greedy, at most 100 new
tokens; the answer keeps the first line of the stripped output with "(" prepended (:func:`mvbench_prediction`).

Scoring: :func:`check_answer` is the official ``check_ans``: the prediction's first space-separated word,
lower-cased and with "." removed, is compared with the ground truth's "(x)" by substring *in either
direction*; since ``"" in "(b)"`` and ``"(" in "(b)"`` hold, a prediction of "(" or "" counts as correct.
Report it for comparability with published numbers, and :func:`check_answer_strict` beside it (the option
letter must be read and equal the ground truth's).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from iv2_data import mcqa_prompt

from .conversation import VIDEO_PLACEHOLDER

MVBENCH_SYSTEM = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement "
    "of objects, and the action and pose of persons. Based on your observations, select the best option that "
    "accurately addresses the question.\n"
)
QUESTION_PROMPT = "\nOnly give the best option."
ANSWER_PROMPT = "Best option:("
RETURN_PROMPT = "("
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class MCQAPrompt:
    """``text``: the LLM prompt with the video placeholder; ``instruction``: the QFormer's instruction."""

    text: str
    instruction: str


def mvbench_prompt(
    question: str,
    candidates: Sequence[str],
    *,
    system: str = MVBENCH_SYSTEM,
    question_prompt: str = QUESTION_PROMPT,
    answer_prompt: str = ANSWER_PROMPT,
) -> MCQAPrompt:
    """The official MVBench prompt (module docstring) for one question and its options (A, B, ...)."""
    if len(candidates) < 2 or len(candidates) > len(OPTION_LETTERS):
        raise ValueError(f"need 2..{len(OPTION_LETTERS)} candidates, got {len(candidates)}")
    block = mcqa_prompt(question, candidates)
    text = (f"{system}[INST] <Video>{VIDEO_PLACEHOLDER}</Video> [/INST] [INST] {block}{question_prompt} [/INST] "
            f"{answer_prompt}")
    return MCQAPrompt(text=text, instruction=system)


def mvbench_answer(candidates: Sequence[str], answer: str) -> str:
    """The ground truth as MVBench writes it: ``"({letter}) {answer}"``."""
    if answer not in candidates:
        raise ValueError(f"answer {answer!r} is not one of the candidates {list(candidates)}")
    return f"({OPTION_LETTERS[list(candidates).index(answer)]}) {answer}"


def mvbench_prediction(generated: str, return_prompt: str = RETURN_PROMPT) -> str:
    """The official post-processing of the generated continuation: cut at ``</s>``, strip, keep the first
    line, prepend ``"("`` (the pre-filled answer prompt's bracket)."""
    text = generated.split("</s>")[0]
    return return_prompt + text.strip().split("\n")[0]


def check_answer(prediction: str, answer: str) -> bool:
    """Official MVBench ``check_ans`` (quirk included: see the module docstring). ``answer`` is
    ``"(x) text"``."""
    pred_option = prediction.lower().split(" ")[0]
    gt_option = answer.lower().split(" ")[0]
    return pred_option.replace(".", "") in gt_option or gt_option in pred_option


_LETTER = re.compile(r"^\(\s*([A-Za-z])\s*\)")


def predicted_letter(prediction: str) -> str | None:
    """The option letter of ``"(x) ..."`` (upper case), or None when the prediction does not start so."""
    match = _LETTER.match(prediction.strip())
    return match.group(1).upper() if match else None


def check_answer_strict(prediction: str, answer: str) -> bool:
    """Strict rule: the prediction must start with ``(x)`` and ``x`` must be the ground truth's letter."""
    gt = predicted_letter(answer)
    if gt is None:
        raise ValueError(f"the ground truth must start with '(letter)', got {answer!r}")
    return predicted_letter(prediction) == gt
