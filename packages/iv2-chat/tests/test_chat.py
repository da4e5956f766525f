"""VideoChat: history, streaming, batched generation equal to one-by-one, context check, images, HD."""

import pytest
import torch

from iv2_chat import VideoChat, hd_preprocess, mvbench_prompt, time_message

GREEDY = {"do_sample": False, "max_new_tokens": 6}


@pytest.fixture
def chat(make_model, llm_tokenizer):
    return VideoChat(make_model(seed=11), llm_tokenizer, generation=GREEDY)


def _videos(n, frames=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, frames, 28, 28, generator=g) for _ in range(n)]


def test_chat_keeps_history_and_builds_the_next_prompt_from_it(chat):
    video = _videos(1)[0]
    chat.upload(video, msg=time_message([0.5, 1.5, 2.5, 3.5]))
    first = chat.chat("What moves?")
    second = chat.chat("Where does it move?")
    assert chat.history == [("What moves?", first), ("Where does it move?", second)]
    prompt = chat.prompt("Next?", chat.history, msg="M")
    assert f" [INST] What moves? [/INST]{first}</s> [INST] Where does it move? [/INST]{second}</s>" in prompt
    assert first  # greedy decoding of the tiny random LLM gives some words
    chat.reset()
    assert chat.history == [] and chat.chat("What moves?") == first  # same prompt, greedy: same answer


def test_streamed_text_is_the_answer(chat):
    chat.upload(_videos(1)[0])
    pieces = []
    answer = chat.chat("What colour is it?", on_text=pieces.append, max_new_tokens=8)
    assert pieces and "".join(pieces).strip() == answer


def test_batched_generation_equals_one_by_one(make_model, llm_tokenizer):
    model = make_model(seed=12)
    videos = _videos(3, seed=1)
    questions = ["What?", "What colour is the moving circle in this video?", "How many are there?"]
    chat = VideoChat(model, llm_tokenizer, generation=GREEDY)
    batched = chat.answer_batch(videos, questions)
    single = []
    for video, question in zip(videos, questions):
        chat.upload(video)
        single.append(chat.chat(question))
    assert batched == single
    assert len(set(batched)) > 1  # different videos and prompts give different answers


def test_batched_mvbench_prompts_equal_one_by_one(make_model, llm_tokenizer):
    model = make_model(seed=13)
    videos = _videos(2, seed=2)
    prompts = [mvbench_prompt("What moves?", ["a circle", "a square"]).text,
               mvbench_prompt("Where does the red circle go?", ["left", "right", "up", "down"]).text]
    chat = VideoChat(model, llm_tokenizer, generation=GREEDY)
    batched = chat.answer_batch(videos, [], prompts=prompts, bos="first")
    single = [chat.answer_batch([v], [], prompts=[p], bos="first")[0] for v, p in zip(videos, prompts)]
    assert batched == single


def test_prompt_longer_than_the_context_is_an_error(chat):
    chat.upload(_videos(1)[0])
    with pytest.raises(ValueError, match="does not fit"):
        chat.chat("What?", max_new_tokens=510)  # the tiny LLM has 512 positions


def test_image_and_chat_template(make_model, llm_tokenizer):
    model = make_model(seed=14)
    chat = VideoChat(model, llm_tokenizer, template="chat_template", generation=GREEDY)
    chat.upload(torch.randn(3, 1, 28, 28))
    assert chat.prompt("What?", media="image").startswith("<s>[INST] <Image>[<IMG_PLH>]</Image>\nWhat? [/INST]")
    assert isinstance(chat.chat("What is it?"), str)


def test_hd_upload_gives_slots_per_sub_video(make_model, llm_tokenizer):
    model = make_model(seed=15)
    chat = VideoChat(model, llm_tokenizer, generation=GREEDY)
    clip, (cols, rows) = hd_preprocess(torch.rand(4, 3, 30, 62) * 255, size=28)
    chat.upload(clip, hd=True)
    assert chat._visual.shape == (8 * (cols * rows + 1), 48)
    assert isinstance(chat.chat("What?"), str)


def test_qformer_instruction_needs_its_tokenizer(make_model, llm_tokenizer, qformer_tokenizer):
    model = make_model(seed=16)
    with pytest.raises(ValueError, match="qformer_tokenizer"):
        VideoChat(model, llm_tokenizer, qformer_instruction="watch")
    chat = VideoChat(model, llm_tokenizer, qformer_tokenizer, qformer_instruction="watch the video", generation=GREEDY)
    plain = VideoChat(model, llm_tokenizer, generation=GREEDY)
    video = _videos(1)[0]
    assert not torch.equal(chat.encode([video])[0], plain.encode([video])[0])
