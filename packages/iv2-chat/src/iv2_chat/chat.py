"""``VideoChat``: chat about a video with history, streaming, and batched generation.

The prompt is the InternVideo2-Chat ``chat()`` string (:func:`iv2_chat.conversation.inference_prompt`), or
the LLM's chat template with ``template="chat_template"``. Generation defaults are the official ones
(sampling, top_p 0.9, at most 200 new tokens); pass ``do_sample=False`` for greedy decoding. As in the
official ``chat()``, the QFormer gets no instruction unless ``qformer_instruction`` is set (the HD model
passes the instruction to every sub-video).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .conversation import (
    PromptTokens,
    chat_template_prompt,
    collate_prompts,
    inference_prompt,
    tokenize_prompt,
)
from .model import VideoChatModel

OFFICIAL_GENERATION: dict[str, Any] = {
    "do_sample": True, "top_p": 0.9, "temperature": 1.0, "max_new_tokens": 200, "num_beams": 1,
}


def _callback_streamer(tokenizer: Any, on_text: Callable[[str], None]):
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


class VideoChat:
    """Chat with ``model`` about one video at a time.

    >>> chat = VideoChat(model, tokenizer)
    >>> chat.upload(video)                    # (3, T, H, W) normalised, or (3, 1, H, W) for an image
    >>> chat.chat("What happens?", do_sample=False)
    >>> chat.chat("And then?", on_text=print)  # streamed; the history holds both turns

    ``instruction`` starts the prompt (the official ``chat(instruction=...)``); ``qformer_tokenizer`` and
    ``qformer_instruction`` give the QFormer its instruction text.
    """

    def __init__(
        self,
        model: VideoChatModel,
        tokenizer: Any,
        qformer_tokenizer: Any | None = None,
        *,
        instruction: str = "",
        qformer_instruction: str | None = None,
        template: str = "official",
        generation: dict[str, Any] | None = None,
    ) -> None:
        if template not in ("official", "chat_template"):
            raise ValueError(f"template must be 'official' or 'chat_template', got {template!r}")
        if template == "chat_template" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("template='chat_template' needs a tokenizer with a chat template")
        if qformer_instruction is not None and qformer_tokenizer is None:
            raise ValueError("qformer_instruction needs the QFormer's tokenizer (qformer_tokenizer=)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.instruction = instruction
        self.qformer_instruction = qformer_instruction
        self.template = template
        self.generation = {**OFFICIAL_GENERATION, **(generation or {})}
        self.history: list[tuple[str, str]] = []
        # how the model's inputs are made (frames, size, mean/std, ...), set by iv2_chat.load_chat
        self.settings: dict[str, Any] = {}
        self._visual: torch.Tensor | None = None
        self._media = "video"
        self._msg = ""

    # --------------------------------------------------------------------------------------- state
    @property
    def device(self) -> torch.device:
        return self.model.project_up.weight.device

    def reset(self) -> None:
        """Forget the history (the uploaded video stays)."""
        self.history = []

    @torch.no_grad()
    def upload(self, video: torch.Tensor, *, msg: str = "", hd: bool = False) -> None:
        """Encode the video the conversation is about and clear the history. ``video``: ``(3, T, H, W)``
        normalised frames (``T == 1``: an image); with ``hd=True``, a clip from :func:`iv2_chat.hd_preprocess`.
        ``msg`` follows the media block (e.g. :func:`iv2_chat.time_message`)."""
        self._visual = self.encode([video], hd=hd)[0]
        self._media = "image" if video.shape[1] == 1 else "video"
        self._msg = msg
        self.history = []

    @torch.no_grad()
    def encode(self, videos: Sequence[torch.Tensor], *, hd: bool = False,
               instructions: Sequence[str] | None = None) -> list[torch.Tensor]:
        """Visual embeddings ``(n_slots, llm_width)`` of each ``(3, T, H, W)`` video (an HD clip with ``hd``, cut
        into tiles of ``settings["size"]``, else of the tower's ``img_size``). The QFormer reads ``instructions``
        (one per video) or else ``qformer_instruction`` (if set)."""
        ids = mask = None
        if instructions is None and self.qformer_instruction is not None:
            instructions = [self.qformer_instruction] * len(videos)
        if instructions is not None:
            if self.qformer_tokenizer is None:
                raise ValueError("QFormer instructions need the QFormer's tokenizer (qformer_tokenizer=)")
            if len(instructions) != len(videos):
                raise ValueError(f"{len(videos)} videos but {len(instructions)} QFormer instructions")
            limit = int(self.model.cfg.qformer_dict().get("max_position_embeddings", 512))
            enc = self.qformer_tokenizer(list(instructions), padding="longest", truncation=True,
                                         max_length=min(512, limit), return_tensors="pt")
            ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        if hd:
            # tiles of the size the model was trained with (the chat folder's settings), else the tower's
            tile = int(self.settings.get("size") or 0) or None
            return self.model.encode_hd_video([v.to(self.device) for v in videos], tile, ids, mask)
        shapes = {tuple(v.shape) for v in videos}
        if len(shapes) != 1:
            raise ValueError(f"videos of one batch must have one shape, got {sorted(shapes)}")
        embeds = self.model.encode_video(torch.stack(list(videos)).to(self.device), ids, mask).embeds
        return list(embeds)

    # ---------------------------------------------------------------------------------------- text
    def prompt(self, question: str, history: Sequence[tuple[str, str]] = (), *, media: str = "video",
               msg: str = "") -> str:
        """The prompt string for ``question`` after ``history``, with the visual placeholder."""
        if self.template == "official":
            return inference_prompt(question, history, media=media, msg=msg, instruction=self.instruction)
        return chat_template_prompt(self.tokenizer, question, history, media=media, msg=msg,
                                    system=self.instruction or None)

    def _tokens(self, text: str, n_slots: int, media: str) -> PromptTokens:
        bos = "every" if self.template == "official" else "none"
        return tokenize_prompt(self.tokenizer, text, n_slots, bos=bos, media=media)

    def _batch(self, prompts: Sequence[PromptTokens], max_new_tokens: int):
        context = getattr(self.model.lm.config, "max_position_embeddings", None)
        room = None if context is None else context - max_new_tokens
        return collate_prompts(prompts, pad_token_id=self._pad_id(), max_length=room).to(self.device)

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id  # Mistral has none: the official code pads with EOS
        return self.tokenizer.eos_token_id if pad is None else pad

    def _generate(self, batch, visual: Sequence[torch.Tensor], options: dict[str, Any]) -> list[str]:
        options = dict(options)
        on_text = options.pop("on_text", None)
        if on_text is not None:
            options["streamer"] = _callback_streamer(self.tokenizer, on_text)
        options.setdefault("pad_token_id", self._pad_id())
        options.setdefault("eos_token_id", self.tokenizer.eos_token_id)
        if not options.get("do_sample", False):  # greedy: drop the sampling knobs transformers warns about
            for key in ("top_p", "top_k", "temperature"):
                options.pop(key, None)
        new = self.model.generate(batch.input_ids, batch.attention_mask, batch.visual_mask, list(visual),
                                  **options)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]

    # ---------------------------------------------------------------------------------------- chat
    def chat(self, question: str, **generation: Any) -> str:
        """Answer ``question`` about the uploaded video, given the history; the turn is added to the history.
        Keyword arguments override the generation options (``do_sample``, ``top_p``, ``temperature``,
        ``max_new_tokens``, ...); ``on_text=callable`` receives the answer as it is generated, ``streamer=``
        takes any ``transformers`` streamer (e.g. ``TextIteratorStreamer``)."""
        if self._visual is None:
            raise RuntimeError("upload(video) first")
        options = {**self.generation, **generation}
        text = self.prompt(question, self.history, media=self._media, msg=self._msg)
        batch = self._batch([self._tokens(text, self._visual.shape[0], self._media)], options["max_new_tokens"])
        answer = self._generate(batch, [self._visual], options)[0]
        self.history.append((question, answer))
        return answer

    @torch.no_grad()
    def answer_batch(
        self,
        videos: Sequence[torch.Tensor] | None,
        questions: Sequence[str],
        *,
        visual: Sequence[torch.Tensor] | None = None,
        msgs: Sequence[str] | None = None,
        prompts: Sequence[str] | None = None,
        bos: str | None = None,
        **generation: Any,
    ) -> list[str]:
        """One answer per (video, question), generated together with left padding (equal to one-by-one
        greedy generation). ``visual``: already encoded videos instead of ``videos``; ``prompts``: full prompt
        strings with the placeholder (e.g. :func:`iv2_chat.mvbench_prompt` texts) instead of ``questions``,
        tokenised with ``bos`` (``"first"`` for the MVBench prompt)."""
        if visual is None:
            if videos is None:
                raise ValueError("pass videos= or visual=")
            visual = self.encode(videos)
        n = len(visual)
        media = ["image" if v is not None and v.shape[1] == 1 else "video" for v in (videos or [None] * n)]
        if prompts is None:
            if len(questions) != n:
                raise ValueError(f"{n} videos but {len(questions)} questions")
            msgs = list(msgs) if msgs is not None else [""] * n
            prompts = [self.prompt(q, (), media=m, msg=s) for q, m, s in zip(questions, media, msgs)]
        elif len(prompts) != n:
            raise ValueError(f"{n} videos but {len(prompts)} prompts")
        if bos is None:
            bos = "every" if self.template == "official" else "none"
        tokens = [tokenize_prompt(self.tokenizer, p, v.shape[0], bos=bos, media=m)
                  for p, v, m in zip(prompts, visual, media)]
        options = {**self.generation, **generation}
        return self._generate(self._batch(tokens, options["max_new_tokens"]), visual, options)
