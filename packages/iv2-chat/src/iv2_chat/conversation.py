"""Conversation strings, tokenisation with loss labels, and LLM batches with visual slots.

Two official formats (Mistral ``[INST]`` style) are built here, and the LLM's own chat template as a third:

=====================  ======================================================  ===================================
                       VideoChat2 training string (Ask-Anything)               InternVideo2-Chat inference string
=====================  ======================================================  ===================================
layout                 ``{system}{instr }[INST] <Video></Video>{ msg} [/INST]`` ``{instr}[INST] <Video>[<VID_PLH>]
                       then per turn `` [INST] {q} [/INST]`` (omitted for an    </Video>{msg}[/INST]`` then per past
                       empty q) and `` {a} </s>``; ``strip()`` at the end       turn `` [INST] {q} [/INST]{a}</s>``,
                                                                                then `` [INST] {prompt} [/INST]``
spaces                 around msg, q and a                                     none around msg or before an answer
visual slots           between ``<Video>`` and ``</Video>``                    the placeholder inside them
special tokens         none in the text; one BOS slot prepended to the batch   every segment around the placeholder
                       row (the stage-3 trainer filled it with the scalar BOS  is tokenised with special tokens, so
                       id in every channel, the HD trainer with the BOS        a second BOS follows the visual slots
                       embedding: ``bos_fill``)
time message           ``The video contains N frames sampled at t1, ..., tN seconds.`` (videos only)
images                 ``<Image></Image>``, no time message                    ``<Image>[<IMG_PLH>]</Image>``
=====================  ======================================================  ===================================

Training labels (:func:`tokenize_training_conversation`) follow the official rule: the text after the visual
slots is tokenised in one piece and split on `` [/INST] ``; everything up to the first `` [/INST] `` and every
``[INST] q [/INST]`` is masked (−100), so only the answers and their closing ``</s>`` carry loss; the BOS slot,
the text before the slots, the slots and the padding are −100 too. The loss is the mean over all supervised
tokens of the batch (Hugging Face causal-LM loss). Batches for training are right-padded and capped at
``max_txt_len + visual slots`` tokens (+1 for BOS) as the official trainer does; a cut sample is reported in
``ChatBatch.truncated``. Prompts for generation are left-padded (:func:`collate_prompts`).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

VIDEO_PLACEHOLDER = "[<VID_PLH>]"
IMAGE_PLACEHOLDER = "[<IMG_PLH>]"
HUMAN_START, HUMAN_END, ASSISTANT_END = "[INST]", "[/INST]", "</s>"
MEDIA_TOKENS = {"video": ("<Video>", "</Video>"), "image": ("<Image>", "</Image>")}
IGNORE_INDEX = -100


def _media(media: str) -> tuple[str, str]:
    if media not in MEDIA_TOKENS:
        raise ValueError(f"media must be 'video' or 'image', got {media!r}")
    return MEDIA_TOKENS[media]


def _placeholder(media: str) -> str:
    _media(media)
    return VIDEO_PLACEHOLDER if media == "video" else IMAGE_PLACEHOLDER


# ---------------------------------------------------------------------------------------------- strings
def frame_seconds(frame_indices: Sequence[int], fps: float) -> list[float]:
    """Time stamps (seconds) of decoded frames, as the official readers compute them (``index / fps``)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return [i / fps for i in frame_indices]


def time_message(seconds: Sequence[float]) -> str:
    """``"The video contains N frames sampled at t1, ..., tN seconds."`` with ``str(round(t, 1))`` stamps."""
    stamps = ", ".join(str(round(float(s), 1)) for s in seconds)
    return f"The video contains {len(seconds)} frames sampled at {stamps} seconds."


def training_conversation(
    qa: Sequence[dict[str, str]],
    *,
    media: str = "video",
    system: str = "",
    time_msg: str = "",
    rng: random.Random | None = None,
    question_in_instruction: bool = False,
) -> tuple[str, str]:
    """The VideoChat2 training string for one sample and the instruction for the QFormer.

    ``qa``: turns ``{"q", "a"}`` (``"i"`` on the first: the record-level instruction). With ``rng`` the
    turns are shuffled first (the official ``random_shuffle``). ``system`` must end with a space, as the
    official dataset asserts. ``time_msg`` (videos only) is the sentence from :func:`time_message`.
    Returns ``(conversation, instruction)``; the instruction is ``qa[0]["i"]`` (plus its question with
    ``question_in_instruction``), stripped.
    """
    start, end = _media(media)
    if not qa:
        raise ValueError("a conversation needs at least one QA turn")
    if system and not system.endswith(" "):
        raise ValueError(f"system must end with a space (the official format), got {system!r}")
    if time_msg and media == "image":
        raise ValueError("images take no time message")
    turns = list(qa)
    if rng is not None and len(turns) > 1:
        rng.shuffle(turns)
    instruction = turns[0].get("i", "")
    instruction = instruction + " " if instruction else ""
    msg = " " + time_msg.strip() if time_msg.strip() else ""
    text = system + instruction + f"{HUMAN_START} {start}{end}{msg} {HUMAN_END}"
    for turn in turns:
        if turn.get("q", ""):
            text += f" {HUMAN_START} {turn['q']} {HUMAN_END}"
        text += f" {turn['a']} {ASSISTANT_END}"
    if question_in_instruction and instruction:
        instruction += turns[0].get("q", "")
    return text.strip(), instruction.strip()


def inference_prompt(
    prompt: str,
    history: Sequence[tuple[str, str]] = (),
    *,
    media: str = "video",
    msg: str = "",
    instruction: str = "",
) -> str:
    """The InternVideo2-Chat ``chat()`` string with the visual placeholder (see the module table)."""
    start, end = _media(media)
    text = (instruction or "") + f"{HUMAN_START} {start}{_placeholder(media)}{end}{msg.rstrip()}{HUMAN_END}"
    for question, answer in history:
        text += f" {HUMAN_START} {question} {HUMAN_END}{answer}{ASSISTANT_END}"
    return text + f" {HUMAN_START} {prompt} {HUMAN_END}"


def chat_template_prompt(
    tokenizer: Any,
    prompt: str,
    history: Sequence[tuple[str, str]] = (),
    *,
    media: str = "video",
    msg: str = "",
    system: str | None = None,
) -> str:
    """The same conversation through the tokenizer's own chat template (for LLMs other than Mistral): the
    media block and ``msg`` open the first user turn, the assistant turn is left open for generation."""
    messages = _template_messages(prompt, [a for _, a in history], [q for q, _ in history], media, msg, system)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _template_messages(last_q, answers, questions, media, msg, system):
    start, end = _media(media)
    head = f"{start}{_placeholder(media)}{end}" + (f" {msg.strip()}" if msg.strip() else "")
    messages = [{"role": "system", "content": system}] if system else []
    qs = [*questions, last_q] if last_q is not None else list(questions)
    for k, q in enumerate(qs):
        messages.append({"role": "user", "content": f"{head}\n{q}" if k == 0 else q})
        if k < len(answers):
            messages.append({"role": "assistant", "content": answers[k]})
    return messages


# --------------------------------------------------------------------------------------- tokenisation
@dataclass
class TokenizedConversation:
    """One training sample: ids before the visual slots (ending with ``<Video>``), ids after them (from
    ``</Video>``) with their labels (−100 except answers). ``bos_slot``: the batch prepends the BOS slot."""

    before_ids: list[int]
    after_ids: list[int]
    after_labels: list[int]
    bos_slot: bool = True

    def __post_init__(self) -> None:
        if len(self.after_ids) != len(self.after_labels):
            raise ValueError(f"{len(self.after_ids)} ids after the visual slots but {len(self.after_labels)} labels")


def _ids(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _ids_of(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's ids (no special tokens) from one tokenizer call: a fast tokenizer encodes the list as one
    batch, the same ids as text by text for a fraction of the per-call overhead (the demo's stage 3 spent ~10% of
    its step here)."""
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def tokenize_training_conversation(tokenizer: Any, conversation: str, media: str = "video") -> TokenizedConversation:
    """Tokenise a :func:`training_conversation` string with the official label rule (module docstring)."""
    _, end = _media(media)
    parts = conversation.split(end)
    if len(parts) != 2:
        raise ValueError(f"the conversation must contain {end!r} exactly once, found {len(parts) - 1}: "
                         f"{conversation[:120]!r}")
    before, after = parts[0], end + parts[1]
    sep_end, sep_start = f" {HUMAN_END} ", f"{HUMAN_START} "
    pieces = after.split(sep_end)
    pieces = [p + sep_end for p in pieces[:-1]] + pieces[-1:]
    middle = pieces[1:-1]  # "a </s> [INST] q [/INST] ": the answer keeps its loss, the question not
    # the whole tail, then its pieces as the official rule counts them: the media tail and the first question,
    # each middle piece and its answer, the last piece; and the text before the media
    texts = [after, pieces[0].rstrip()]
    for piece in middle:
        texts += [piece.rstrip(), piece.split(sep_start)[0].rstrip()]
    texts += [pieces[-1].rstrip(), before]
    ids = _ids_of(tokenizer, texts)
    after_ids, before_ids = ids[0], ids[-1]
    labels = list(after_ids)
    length = len(ids[1])  # no loss
    labels[:length] = [IGNORE_INDEX] * min(length, len(labels))
    for k in range(len(middle)):
        total, answer = len(ids[2 + 2 * k]), len(ids[3 + 2 * k])
        labels[length + answer: length + total] = [IGNORE_INDEX] * max(0, min(total, len(labels) - length) - answer)
        length += total
    length += len(ids[-2])
    if length != len(after_ids):
        raise ValueError(
            f"the tokenizer does not split this conversation into the pieces the label rule expects "
            f"({length} tokens counted piecewise, {len(after_ids)} in one piece): {conversation[:200]!r}"
        )
    return TokenizedConversation(before_ids, after_ids, labels)


def tokenize_template_conversation(
    tokenizer: Any,
    qa: Sequence[dict[str, str]],
    *,
    media: str = "video",
    msg: str = "",
    system: str | None = None,
) -> TokenizedConversation:
    """Training sample through the tokenizer's chat template: each assistant turn (as the template renders
    it, end-of-turn token included) carries loss, everything else is −100. The template's own BOS is kept,
    so the batch adds no BOS slot."""
    questions = [t.get("q", "") for t in qa]
    answers = [t["a"] for t in qa]
    messages = _template_messages(None, answers, questions, media, msg, system)

    def render(upto: int, open_turn: bool) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=open_turn)

    spans: list[tuple[str, bool]] = []
    done = ""
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix, full = render(k, True), render(k + 1, False)
        if not (prefix.startswith(done) and full.startswith(prefix)):
            raise ValueError("the chat template does not render the conversation incrementally; "
                             "use the official string (training_conversation) instead")
        spans += [(prefix[len(done):], False), (full[len(prefix):], True)]
        done = full
    placeholder = _placeholder(media)
    first, supervised_first = spans[0]
    if placeholder not in first or supervised_first:
        raise ValueError("the rendered template lost the visual placeholder")
    head, tail = first.split(placeholder)
    before_ids = _ids(tokenizer, head)
    after_ids, labels = [], []
    for text, supervised in [(tail, False), *spans[1:]]:
        ids = _ids(tokenizer, text)
        after_ids += ids
        labels += ids if supervised else [IGNORE_INDEX] * len(ids)
    return TokenizedConversation(before_ids, after_ids, labels, bos_slot=False)


@dataclass
class PromptTokens:
    """A tokenised prompt: ``ids`` with ``visual[i]`` True at the visual slots (their id is a dummy)."""

    ids: list[int]
    visual: list[bool]


def tokenize_prompt(
    tokenizer: Any, prompt: str, num_visual: int | Sequence[int], *, bos: str = "every", media: str = "video"
) -> PromptTokens:
    """Split ``prompt`` at its placeholders (one per visual input) and put ``num_visual`` slots (one count per
    placeholder, e.g. ``Q·(tiles + 1)`` in HD) at each. ``bos``: ``"every"`` tokenises every segment with
    special tokens (InternVideo2-Chat ``chat()``: a BOS after each visual block), ``"first"`` only the first
    (the Ask-Anything demos and MVBench), ``"none"`` none (a chat-template string already holds its BOS)."""
    if bos not in ("every", "first", "none"):
        raise ValueError(f"bos must be 'every', 'first' or 'none', got {bos!r}")
    segments = prompt.split(_placeholder(media))
    counts = [num_visual] * (len(segments) - 1) if isinstance(num_visual, int) else list(num_visual)
    if len(counts) != len(segments) - 1:
        raise ValueError(f"{len(segments) - 1} placeholder(s) in the prompt but {len(counts)} visual input(s)")
    ids: list[int] = []
    visual: list[bool] = []
    for k, seg in enumerate(segments):
        special = bos == "every" or (bos == "first" and k == 0)
        seg_ids = _ids(tokenizer, seg, special) if (seg or special) else []
        ids += seg_ids
        visual += [False] * len(seg_ids)
        if k < len(counts):
            ids += [0] * counts[k]
            visual += [True] * counts[k]
    return PromptTokens(ids, visual)


# ------------------------------------------------------------------------------------------- batches
@dataclass
class ChatBatch:
    """LLM inputs with visual slots: ``input_ids``, ``attention_mask``, ``visual_mask`` (B, L); ``labels``
    (B, L) or None; ``bos_scalar_mask`` (B, L) or None (official stage-3 BOS fill); ``truncated``: which
    samples the length cap cut."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    visual_mask: torch.Tensor
    labels: torch.Tensor | None = None
    bos_scalar_mask: torch.Tensor | None = None
    truncated: list[bool] = field(default_factory=list)

    def to(self, device: torch.device | str) -> ChatBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return replace(self, **moved)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for ``VideoChatModel.forward`` (besides the video / visual embeddings)."""
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "visual_mask": self.visual_mask}
        if self.labels is not None:
            out["labels"] = self.labels
        if self.bos_scalar_mask is not None:
            out["bos_scalar_mask"] = self.bos_scalar_mask
        return out


def collate_training(
    samples: Sequence[TokenizedConversation],
    num_visual: int | Sequence[int],
    *,
    bos_token_id: int,
    pad_token_id: int,
    max_txt_len: int = 512,
    bos_fill: str = "embedding",
    max_length: int | None = None,
) -> ChatBatch:
    """Right-padded training batch, as the official trainer assembles it: ``[BOS slot] + before + visual +
    after``, at most ``min(longest, max_txt_len + max(num_visual))`` tokens, BOS slot included (longer
    samples are cut at the end, flagged in ``truncated`` and warned about), labels −100 outside the answers.
    ``max_length``: the LLM's context (positions); rows are cut to it too, so that no sample runs past the
    positions the LLM has (the official cap assumes Mistral's 32k). A cut that would reach into the visual
    slots is an error. ``bos_fill``: ``"embedding"`` (the BOS token's embedding; the HD trainer) or
    ``"scalar"`` (every channel set to the BOS id, as the stage-3 trainer ``videochat2_it_mistral`` did)."""
    if bos_fill not in ("embedding", "scalar"):
        raise ValueError(f"bos_fill must be 'embedding' or 'scalar', got {bos_fill!r}")
    if not samples:
        raise ValueError("cannot collate an empty batch")
    counts = [num_visual] * len(samples) if isinstance(num_visual, int) else list(num_visual)
    if len(counts) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(counts)} visual counts")
    rows = []
    for s, n in zip(samples, counts):
        head = [bos_token_id] if s.bos_slot else []
        ids = head + s.before_ids + [pad_token_id] * n + s.after_ids
        vis = [False] * (len(head) + len(s.before_ids)) + [True] * n + [False] * len(s.after_ids)
        labels = [IGNORE_INDEX] * (len(head) + len(s.before_ids) + n) + s.after_labels
        rows.append((ids, vis, labels, bool(s.bos_slot)))
    longest = max(len(r[0]) for r in rows)  # the BOS slot included: the official "max_len + 1"
    limit = f"max_txt_len={max_txt_len} + {max(counts)} visual slots"
    length = min(longest, max_txt_len + max(counts))
    if max_length is not None and max_length < length:
        length, limit = max_length, f"the LLM's context of {max_length} positions"
    b = len(rows)
    input_ids = torch.full((b, length), pad_token_id, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    visual = torch.zeros((b, length), dtype=torch.bool)
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
    truncated = []
    for i, (ids, vis, lab, _) in enumerate(rows):
        n = min(len(ids), length)
        if n < len(ids) and any(vis[n:]):
            raise ValueError(f"sample {i}: cutting it to {length} tokens ({limit}) cuts into the visual slots "
                             f"({sum(vis)} of them end at token {max(j for j, v in enumerate(vis) if v) + 1})")
        truncated.append(n < len(ids))
        input_ids[i, :n] = torch.tensor(ids[:n])
        attention[i, :n] = 1
        visual[i, :n] = torch.tensor(vis[:n])
        labels[i, :n] = torch.tensor(lab[:n])
    if any(truncated):
        warnings.warn(f"{sum(truncated)} of {b} conversation(s) longer than {length} tokens ({limit}) were cut "
                      f"at the end, as the official trainer does", stacklevel=2)
    bos_scalar = None
    if bos_fill == "scalar":
        bos_scalar = torch.zeros((b, length), dtype=torch.bool)
        bos_scalar[:, 0] = torch.tensor([r[3] for r in rows])
    return ChatBatch(input_ids, attention, visual, labels, bos_scalar, truncated)


class PromptTooLongError(ValueError):
    """A prompt (visual slots included) does not fit the LLM's context together with the tokens to generate."""


def collate_prompts(
    prompts: Sequence[PromptTokens], *, pad_token_id: int, max_length: int | None = None
) -> ChatBatch:
    """Left-padded batch of prompts for generation. A prompt longer than ``max_length`` is a
    :class:`PromptTooLongError` (it would not fit the LLM's context)."""
    if not prompts:
        raise ValueError("cannot collate an empty batch")
    longest = max(len(p.ids) for p in prompts)
    if max_length is not None and longest > max_length:
        raise PromptTooLongError(
            f"a prompt of {longest} tokens (visual slots included) does not fit the {max_length} available; "
            f"shorten the history / question or use fewer frames or tiles")
    b = len(prompts)
    input_ids = torch.full((b, longest), pad_token_id, dtype=torch.long)
    attention = torch.zeros((b, longest), dtype=torch.long)
    visual = torch.zeros((b, longest), dtype=torch.bool)
    for i, p in enumerate(prompts):
        n = len(p.ids)
        input_ids[i, longest - n:] = torch.tensor(p.ids, dtype=torch.long)
        attention[i, longest - n:] = 1
        visual[i, longest - n:] = torch.tensor(p.visual, dtype=torch.bool)
    return ChatBatch(input_ids, attention, visual, None, None, [False] * b)
