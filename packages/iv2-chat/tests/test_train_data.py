"""Training samples: alignment and MC-QA conversations with exact loss labels, examples from iv2-data samples,
padded batches (plain and HD), the time message, the tiny vocabulary."""

import random

import pytest
import torch

from iv2_chat import (
    IGNORE_INDEX,
    ChatCollator,
    ChatExamples,
    alignment_conversation,
    mcqa_turns,
    mvbench_prompt,
    time_message,
    video_time_message,
)


def _supervised(tokenizer, conv):
    """The supervised tokens, space-joined."""
    return " ".join(tokenizer.convert_ids_to_tokens(
        [t for t, lab in zip(conv.after_ids, conv.after_labels) if lab != IGNORE_INDEX]))


def test_alignment_conversation_supervises_the_caption_and_eos_only(llm_tokenizer):
    conv = alignment_conversation(llm_tokenizer, "a red circle moves left")
    assert llm_tokenizer.convert_ids_to_tokens(conv.before_ids) == ["[INST]", "<Video>"]
    after = llm_tokenizer.convert_ids_to_tokens(conv.after_ids)
    # "</Video> describe the following video concisely . [/INST]" then the caption and </s>
    assert after[0] == "</Video>" and after[after.index("[/INST]") + 1:] == ["a", "red", "circle", "moves", "left",
                                                                              "</s>"]
    labels = [lab != IGNORE_INDEX for lab in conv.after_labels]
    assert labels == [False] * (after.index("[/INST]") + 1) + [True] * 6
    image = alignment_conversation(llm_tokenizer, "a square", media="image")
    assert llm_tokenizer.convert_ids_to_tokens(image.before_ids)[-1] == "<Image>"
    with pytest.raises(ValueError, match="media must be"):
        alignment_conversation(llm_tokenizer, "x", media="audio")


def test_mcqa_turn_is_the_mvbench_prompt_with_its_answer(llm_tokenizer):
    candidates = ["up", "right", "down", "left"]
    (turn,) = mcqa_turns("In which direction does it move?", candidates, "down")
    assert turn["a"] == "Best option:(C) down"
    assert turn["q"].startswith("Question: In which direction") and turn["q"].endswith("Only give the best option.")
    # The training string is the MVBench evaluation prompt followed by the answer.
    from iv2_chat import VIDEO_PLACEHOLDER, tokenize_training_conversation, training_conversation

    text, instruction = training_conversation([turn | {"i": turn["i"]}])
    prompt = mvbench_prompt("In which direction does it move?", candidates).text.replace(VIDEO_PLACEHOLDER, "")
    train_tokens = llm_tokenizer.tokenize(text)
    assert train_tokens[: len(llm_tokenizer.tokenize(prompt))] == llm_tokenizer.tokenize(prompt)
    assert instruction == turn["i"]
    conv = tokenize_training_conversation(llm_tokenizer, text)
    assert _supervised(llm_tokenizer, conv) == "best option : ( c ) down </s>"  # the tiny tokenizer lower-cases


class _Samples(torch.utils.data.Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def _mc_sample(video):
    return {"video": video, "question": "What colour is the moving circle?", "candidates": ["red", "blue", "green",
            "cyan"], "answer": "blue", "path": "videos/000001.mp4", "task": "colour"}


def test_examples_of_each_kind(llm_tokenizer):
    video = torch.zeros(3, 4, 28, 28)
    instructions = _Samples([{"video": video, "media_type": "video", "instruction": "Watch it.",
                              "qa": [{"q": "What moves?", "a": "A circle."}, {"q": "Where?", "a": "Left."}],
                              "path": "videos/000000.mp4"}])
    random.seed(0)
    ex = ChatExamples(instructions, "instructions", llm_tokenizer, time_message=lambda s: "The video contains 4 "
                      "frames sampled at 0.5, 1.5, 2.5, 3.5 seconds.", question_in_instruction=True)[0]
    assert ex.kind == "instructions" and ex.video is video
    assert ex.instruction in ("Watch it. What moves?", "Watch it. Where?")  # the first turn after shuffling
    answers = _supervised(llm_tokenizer, ex.conversation)
    assert "a circle . </s>" in answers and "left . </s>" in answers and "where" not in answers
    assert "contains" in llm_tokenizer.decode(ex.conversation.after_ids)

    mc = ChatExamples(_Samples([_mc_sample(video)]), "mcqa", llm_tokenizer)[0]
    assert mc.instruction.startswith("Carefully watch the video")
    assert _supervised(llm_tokenizer, mc.conversation) == "best option : ( b ) blue </s>"

    captions = ChatExamples(_Samples([{"video": video, "caption": "a red circle moves left"}]), "video_text",
                            llm_tokenizer)[0]
    assert captions.instruction == ""
    assert _supervised(llm_tokenizer, captions.conversation) == "a red circle moves left </s>"
    with pytest.raises(ValueError, match="kind must be one of"):
        ChatExamples(instructions, "audio_text", llm_tokenizer)


def test_shuffled_options_move_the_answer_letter(llm_tokenizer):
    data = ChatExamples(_Samples([_mc_sample(torch.zeros(3, 4, 28, 28))]), "mcqa", llm_tokenizer,
                        shuffle_options=True)
    random.seed(3)
    letters = {_supervised(llm_tokenizer, data[0].conversation) for _ in range(40)}
    assert letters == {f"best option : ( {x} ) blue </s>" for x in "abcd"}


def test_collator_pads_and_tokenises_the_instructions(llm_tokenizer, qformer_tokenizer):
    video = torch.randn(3, 4, 28, 28)
    examples = ChatExamples(_Samples([_mc_sample(video), {"video": video, "caption": "a red circle"}]),
                            "mcqa", llm_tokenizer)
    first = examples[0]
    second = ChatExamples(_Samples([{"video": video, "caption": "a red circle"}]), "video_text", llm_tokenizer)[0]
    batch = ChatCollator(llm_tokenizer, qformer_tokenizer, 8)([first, second])
    assert batch["video"].shape == (2, 3, 4, 28, 28)
    assert batch["visual_mask"].sum(1).tolist() == [8, 8]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["instruction_ids"].shape[0] == 2
    assert batch["instruction_mask"][1].sum() == 0 or batch["instruction_mask"][1].sum() <= 2  # "" is left-padded
    assert batch["attention_mask"][1, -1] == 0  # the shorter conversation is right-padded


def test_hd_collator_counts_slots_per_tile(llm_tokenizer, qformer_tokenizer):
    one, six = torch.randn(3, 2, 28, 28), torch.randn(3, 2, 56, 84)  # 1 tile, 2 x 3 tiles (+ global each)
    examples = [ChatExamples(_Samples([{"video": v, "caption": "a red circle"}]), "video_text", llm_tokenizer)[0]
                for v in (one, six)]
    batch = ChatCollator(llm_tokenizer, qformer_tokenizer, 8, hd_size=28)(examples)
    assert batch["visual_mask"].sum(1).tolist() == [8 * 2, 8 * 7]
    assert isinstance(batch["video"], list) and batch["video"][1] is six


def test_conversations_longer_than_the_llm_context_are_cut_and_reported(llm_tokenizer, qformer_tokenizer):
    """Bad input: a training conversation that does not fit the LLM's positions is cut to them (answer tokens
    past the end lose their loss), with a warning naming the limit; one whose visual slots do not fit is an
    error naming the sample."""
    video = torch.randn(3, 4, 28, 28)
    example = ChatExamples(_Samples([_mc_sample(video)]), "mcqa", llm_tokenizer)[0]
    full = ChatCollator(llm_tokenizer, qformer_tokenizer, 8)([example])
    length = full["input_ids"].shape[1]
    context = length - 5
    with pytest.warns(UserWarning, match=rf"1 of 1 conversation\(s\) longer than {context} tokens \(the LLM's context "
                                         rf"of {context} positions\) were cut"):
        cut = ChatCollator(llm_tokenizer, qformer_tokenizer, 8, max_length=context)([example])
    assert cut["input_ids"].shape[1] == context
    # the same row up to the context: nothing shifted, the last 5 tokens (and their labels) gone
    for key in ("input_ids", "labels", "attention_mask", "visual_mask"):
        assert torch.equal(cut[key], full[key][:, :context]), key
    assert (full["labels"][:, context:] != IGNORE_INDEX).any()  # what was cut carried loss: it is not silent
    with pytest.raises(ValueError, match="sample 0: cutting it to 6 tokens .*cuts into the visual slots"):
        ChatCollator(llm_tokenizer, qformer_tokenizer, 8, max_length=6)([example])


def test_time_message_follows_the_real_frames(tmp_path):
    from iv2_data.synthetic import write_video

    frames = torch.zeros(16, 32, 32, 3, dtype=torch.uint8).numpy()
    write_video(tmp_path / "clip.mp4", frames, fps=8)
    # 16 frames at 8 fps, 4 segment middles: frames 1, 5, 9, 13 -> 0.125, 0.625, 1.125, 1.625 s
    assert video_time_message(tmp_path / "clip.mp4", 4) == time_message([1 / 8, 5 / 8, 9 / 8, 13 / 8])
    assert "0.1, 0.6, 1.1, 1.6" in video_time_message(tmp_path / "clip.mp4", 4)


def test_tiny_vocabulary_covers_the_corpus_and_prompts(llm_tokenizer, qformer_tokenizer):
    from iv2_chat import MVBENCH_SYSTEM
    from iv2_chat.train_data import ALIGNMENT_PROMPT
    from iv2_data import mcqa_prompt
    from iv2_data.synthetic import SyntheticCorpus

    corpus = SyntheticCorpus(num_samples=24, seed=5)
    texts = [MVBENCH_SYSTEM, ALIGNMENT_PROMPT, time_message([0.5, 12.25])]  # what the QFormer may read too
    prompts = []  # LLM prompts
    for i in range(len(corpus)):
        item = corpus[i]
        texts += [*item["captions"], item["asr"], item["audio_caption"]]
        texts += [t for turn in item["conversation"] for t in turn.values()]
        texts += [mcqa_prompt(q["question"], q["candidates"]) + " " + q["answer"] for q in item["qa"]]
        prompts += [mvbench_prompt(q["question"], q["candidates"]).text.replace("[<VID_PLH>]", "") for q in item["qa"]]
    for text in texts + prompts:
        assert llm_tokenizer.unk_token_id not in llm_tokenizer(text)["input_ids"], text
    for text in texts:
        assert qformer_tokenizer.unk_token_id not in qformer_tokenizer(text)["input_ids"], text
