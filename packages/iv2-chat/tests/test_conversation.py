"""Conversation strings (VideoChat2 training, InternVideo2-Chat inference, chat template), label masking,
batch assembly and padding."""

import random

import pytest
import torch

from iv2_chat import (
    IGNORE_INDEX,
    collate_prompts,
    collate_training,
    frame_seconds,
    inference_prompt,
    time_message,
    tokenize_prompt,
    tokenize_template_conversation,
    tokenize_training_conversation,
    training_conversation,
)

QA = [{"i": "Watch carefully.", "q": "What moves?", "a": "A red circle."}, {"q": "Where?", "a": "It moves left."}]
MSG = "The video contains 2 frames sampled at 0.5, 1.5 seconds."


def test_time_message():
    assert frame_seconds([0, 15, 31], 30.0) == [0.0, 0.5, 31 / 30]
    assert time_message([0.0, 0.5, 31 / 30]) == "The video contains 3 frames sampled at 0.0, 0.5, 1.0 seconds."


def test_training_string_is_the_official_one():
    text, instruction = training_conversation(QA, time_msg=MSG)
    assert text == ("Watch carefully. [INST] <Video></Video> The video contains 2 frames sampled at 0.5, 1.5 seconds. "
                    "[/INST] [INST] What moves? [/INST] A red circle. </s> [INST] Where? [/INST] It moves left. </s>")
    assert instruction == "Watch carefully."
    text, _ = training_conversation([{"q": "", "a": "A caption."}], media="image", system="You see. ")
    assert text == "You see. [INST] <Image></Image> [/INST] A caption. </s>"
    _, with_q = training_conversation(QA, question_in_instruction=True)
    assert with_q == "Watch carefully. What moves?"
    with pytest.raises(ValueError, match="end with a space"):
        training_conversation(QA, system="no space")
    with pytest.raises(ValueError, match="images take no time message"):
        training_conversation(QA, media="image", time_msg=MSG)


def test_training_turns_are_shuffled_with_the_given_rng():
    turns = [{"q": f"q{i}", "a": f"a{i}"} for i in range(5)]
    text, _ = training_conversation(turns, rng=random.Random(3))
    order = [int(p.split(" ")[0]) for p in text.split("[INST] q")[1:]]
    expected = list(range(5))
    random.Random(3).shuffle(expected)
    assert order == expected


def test_inference_string_is_the_internvideo2_chat_one():
    text = inference_prompt("What now?", [("What moves?", "A circle.")], msg="M ", instruction="Be brief.")
    assert text == ("Be brief.[INST] <Video>[<VID_PLH>]</Video>M[/INST] [INST] What moves? [/INST]A circle.</s>"
                    " [INST] What now? [/INST]")
    assert inference_prompt("Q", media="image") == "[INST] <Image>[<IMG_PLH>]</Image>[/INST] [INST] Q [/INST]"


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_labels_supervise_exactly_the_answers_and_their_eos(llm_tokenizer):
    text, _ = training_conversation(QA, time_msg=MSG)
    sample = tokenize_training_conversation(llm_tokenizer, text)
    assert sample.before_ids == _ids(llm_tokenizer, "Watch carefully. [INST] <Video>")
    # the expected labels, piece by piece (written independently of the split rule)
    pieces = [("</Video> " + MSG + " [/INST] [INST] What moves? [/INST]", False), ("A red circle. </s>", True),
              ("[INST] Where? [/INST]", False), ("It moves left. </s>", True)]
    expected_ids, expected_labels = [], []
    for piece, supervised in pieces:
        ids = _ids(llm_tokenizer, piece)
        expected_ids += ids
        expected_labels += ids if supervised else [IGNORE_INDEX] * len(ids)
    assert sample.after_ids == expected_ids
    assert sample.after_labels == expected_labels
    supervised = [t for t in sample.after_labels if t != IGNORE_INDEX]
    # the tiny tokenizer lower-cases (its vocabulary is the corpus' lower-case words)
    assert llm_tokenizer.decode(supervised) == "a red circle. </s> it moves left. </s>"


def test_labels_without_question(llm_tokenizer):
    text, _ = training_conversation([{"q": "", "a": "A caption."}])
    sample = tokenize_training_conversation(llm_tokenizer, text)
    n = len(_ids(llm_tokenizer, "A caption. </s>"))
    assert sample.after_labels[-n:] == sample.after_ids[-n:]
    assert set(sample.after_labels[:-n]) == {IGNORE_INDEX}


def test_tokenizer_that_breaks_the_label_rule_is_an_error():
    class CharPairs:  # one token per two characters: not additive over the pieces (a str or a list, as HF's)
        def __call__(self, text, add_special_tokens=False):
            ids = lambda t: list(range((len(t) + 1) // 2))
            return {"input_ids": ids(text) if isinstance(text, str) else [ids(t) for t in text]}

    text, _ = training_conversation(QA)
    with pytest.raises(ValueError, match="does not split this conversation"):
        tokenize_training_conversation(CharPairs(), text)


def test_training_batch_layout(llm_tokenizer):
    short = tokenize_training_conversation(llm_tokenizer, training_conversation(QA[1:])[0])
    long = tokenize_training_conversation(llm_tokenizer, training_conversation(QA, time_msg=MSG)[0])
    batch = collate_training([short, long], 3, bos_token_id=1, pad_token_id=5)
    n_long = 1 + len(long.before_ids) + 3 + len(long.after_ids)
    assert batch.input_ids.shape == (2, n_long) and batch.truncated == [False, False]
    assert batch.input_ids[:, 0].tolist() == [1, 1]  # the BOS slot
    for row, s in enumerate([short, long]):
        start = 1 + len(s.before_ids)
        assert batch.visual_mask[row].nonzero().flatten().tolist() == [start, start + 1, start + 2]
        end = start + 3 + len(s.after_ids)
        assert batch.input_ids[row, start + 3:end].tolist() == s.after_ids
        assert batch.labels[row, start + 3:end].tolist() == s.after_labels
        assert batch.labels[row, :start + 3].eq(IGNORE_INDEX).all() and batch.labels[row, end:].eq(IGNORE_INDEX).all()
        assert batch.attention_mask[row].tolist() == [1] * end + [0] * (n_long - end)  # right padding
        assert batch.input_ids[row, end:].eq(5).all()
    assert batch.bos_scalar_mask is None


def test_training_batch_truncation_is_reported(llm_tokenizer):
    sample = tokenize_training_conversation(llm_tokenizer, training_conversation(QA, time_msg=MSG)[0])
    with pytest.warns(UserWarning, match="were cut at the end"):
        batch = collate_training([sample], 3, bos_token_id=1, pad_token_id=5, max_txt_len=20)
    assert batch.truncated == [True] and batch.input_ids.shape == (1, 20 + 3)  # official max_txt_len + slots
    with pytest.raises(ValueError, match="cuts into the visual slots"):
        collate_training([sample], 40, bos_token_id=1, pad_token_id=5, max_txt_len=-35)


def test_template_conversation_supervises_the_rendered_answers(llm_tokenizer):
    sample = tokenize_template_conversation(llm_tokenizer, QA[:1] + QA[1:], msg=MSG)
    assert not sample.bos_slot and sample.before_ids[0] == llm_tokenizer.bos_token_id
    supervised = [t for t in sample.after_labels if t != IGNORE_INDEX]
    eos = llm_tokenizer.eos_token_id
    assert supervised == [*_ids(llm_tokenizer, "A red circle."), eos, *_ids(llm_tokenizer, "It moves left."), eos]
    text = llm_tokenizer.decode(sample.before_ids + sample.after_ids)
    assert text.startswith("<s> [INST] <Video> </Video> the video contains")  # lower-cased by the tokenizer


def test_prompt_tokens_and_bos_policies(llm_tokenizer):
    prompt = inference_prompt("What?", msg="M")
    every = tokenize_prompt(llm_tokenizer, prompt, 4, bos="every")
    first = tokenize_prompt(llm_tokenizer, prompt, 4, bos="first")
    k = every.visual.index(True)
    assert every.ids[0] == first.ids[0] == 1
    assert every.visual[k:k + 4] == [True] * 4 and every.ids[k + 4] == 1  # a second BOS after the slots
    assert first.ids[k + 4] != 1 and len(every.ids) == len(first.ids) + 1
    with pytest.raises(ValueError, match="1 placeholder"):
        tokenize_prompt(llm_tokenizer, prompt, [4, 4])


def test_prompt_batch_is_left_padded_and_checks_the_context(llm_tokenizer):
    a = tokenize_prompt(llm_tokenizer, inference_prompt("What?"), 2)
    b = tokenize_prompt(llm_tokenizer, inference_prompt("What colour is the moving circle?"), 2)
    batch = collate_prompts([a, b], pad_token_id=5)
    pad = len(b.ids) - len(a.ids)
    assert batch.attention_mask[0].tolist() == [0] * pad + [1] * len(a.ids)
    assert batch.input_ids[0, pad:].tolist() == a.ids and batch.input_ids[1].tolist() == b.ids
    assert torch.equal(batch.visual_mask[0, pad:], torch.tensor(a.visual))
    with pytest.raises(ValueError, match=f"a prompt of {len(b.ids)} tokens"):
        collate_prompts([a, b], pad_token_id=5, max_length=len(b.ids) - 1)
