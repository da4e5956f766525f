"""A tiny chat model and its tokenizers, built offline (tests, demos, the ``tiny-synthetic`` flavor).

* :func:`tiny_llm_tokenizer`: a word-level fast tokenizer (``tokenizers``) over a fixed word list: the words of
  the official prompts (MVBench, the time message, the synthetic corpus of :mod:`iv2_data.synthetic`),
  letters, digits and punctuation; ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 (Mistral's ids), ``[INST]`` / ``[/INST]``
  as special tokens (as in Mistral-Instruct-v0.3), ``<pad>``, the media tags, and a Mistral-style chat
  template. Encoding adds ``<s>`` (no ``</s>``), like Mistral's tokenizer.
* :func:`tiny_qformer_tokenizer`: a BERT WordPiece tokenizer read from a ``vocab.txt`` it writes, lower-cased,
  with ``[DEC]`` added as BOS and left padding / truncation, as the official QFormer tokenizer.
* :func:`tiny_chat_config`: a small tower, QFormer and Mistral-architecture LLM whose vocabularies match
  these tokenizers. Nothing is downloaded.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import Any

from iv2_data.synthetic import BACKGROUNDS, COLOURS, DIRECTIONS, OBJECTS

from .config import OFFICIAL_LORA, ChatConfig, chat_vision_config

LLM_SPECIAL = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<pad>")
MEDIA_TAGS = ("<Video>", "</Video>", "<Image>", "</Image>")
BERT_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}{% endfor %}"
)

_TEXT = """
Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of
objects, and the action and pose of persons. Based on your observations, select the best option that
accurately addresses the question. Question Options Only give the best option Best The video contains frames
sampled at seconds image Describe briefly Where does it move It moves what moves where goes In which direction
What colour is moving How many are there Which object digit digits across over texture on towards background
a an one two three four circle circles square squares triangle triangles cross crosses yes no I see this that
is are in of to with it its left right up down beeps tone once twice times number look here comes heading
going someone says while low high very medium shrill red green blue yellow magenta cyan
"""


def tiny_words(extra: Iterable[str] = ()) -> list[str]:
    """The tiny vocabulary (ordered, unique): prompt and corpus words, letters, digits, punctuation."""
    words = [*_TEXT.split(), *COLOURS, *OBJECTS, *DIRECTIONS, *BACKGROUNDS]
    words += [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words += [str(d) for d in range(10)] + list(".,:;?!()'\"-/")
    words += list(extra)
    seen: dict[str, None] = {}
    for w in words:
        w = w.strip(".,:;?!()")
        if w and w not in seen and w not in LLM_SPECIAL and w not in MEDIA_TAGS:
            seen[w] = None
    for p in ".,:;?!()'\"-/":
        seen.setdefault(p, None)
    return list(seen)


def tiny_llm_tokenizer(extra_words: Iterable[str] = ()) -> Any:
    """Word-level Mistral-like fast tokenizer (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*LLM_SPECIAL, *MEDIA_TAGS, *tiny_words(extra_words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words, no space before punctuation
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["[INST]", "[/INST]"]})
    tokenizer.add_tokens(list(MEDIA_TAGS))
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


def tiny_qformer_tokenizer(extra_words: Iterable[str] = ()) -> Any:
    """BERT tokenizer from a written ``vocab.txt`` (lower-cased words), with ``[DEC]`` as BOS, left padding
    and left truncation (the official QFormer tokenizer's settings)."""
    from transformers import BertTokenizer

    words = [*BERT_SPECIAL]
    for w in tiny_words(extra_words):
        w = w.lower()
        if w not in words:
            words.append(w)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(words) + "\n")
        tokenizer = BertTokenizer.from_pretrained(tmp, do_lower_case=True)
    return qformer_tokenizer_settings(tokenizer)


def qformer_tokenizer_settings(tokenizer: Any) -> Any:
    """Apply the official QFormer tokenizer settings to a BERT tokenizer: ``[DEC]`` as BOS token (which
    grows the vocabulary by one: 30522 → 30523 for bert-base), left padding, left truncation."""
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    return tokenizer


def tiny_chat_config(
    *,
    llm_vocab_size: int | None = None,
    qformer_vocab_size: int | None = None,
    lora: dict[str, Any] | bool | None = True,
    num_frames: int = 4,
    img_size: int = 28,
) -> ChatConfig:
    """A chat model of a few hundred thousand parameters matching the tiny tokenizers."""
    llm_vocab_size = llm_vocab_size or len(tiny_llm_tokenizer())
    qformer_vocab_size = qformer_vocab_size or len(tiny_qformer_tokenizer())
    vision = chat_vision_config(
        "internvideo2-tiny", img_size=img_size, patch_size=14, num_frames=num_frames, embed_dim=32, depth=3,
        num_heads=4, mlp_ratio=2.0,
    )
    qformer = {
        "vocab_size": qformer_vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "initializer_range": 0.02,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "cross_attention_freq": 2, "encoder_width": 32,
        "drop_path_rate": 0.1,
    }
    llm = {
        "model_type": "mistral", "vocab_size": llm_vocab_size, "hidden_size": 48, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": None,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 5,
    }
    if lora is True:
        lora = {**OFFICIAL_LORA, "r": 4, "lora_alpha": 8}
    return ChatConfig(vision=vision, qformer=qformer, num_query_tokens=4, extra_num_query_tokens=4, llm=llm,
                      lora=lora or None)
