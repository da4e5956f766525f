"""A tiny chat model and its tokenizers, built offline (tests, demos, the ``tiny-synthetic`` flavor).

* :func:`tiny_words`: the vocabulary: every word of the synthetic corpus (``iv2_data.synthetic.corpus_words()``,
  the one corpus vocabulary) plus the words of this package's prompts (MVBench, the time message, the
  alignment prompt), letters, digits and punctuation; all lower case.
* :func:`tiny_llm_tokenizer`: a word-level fast tokenizer (``tokenizers``) over it that lower-cases its input;
  ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 (Mistral's ids), ``[INST]`` / ``[/INST]`` as special tokens (as in
  Mistral-Instruct-v0.3), ``<pad>``, the media tags, and a Mistral-style chat template. Encoding adds ``<s>``
  (no ``</s>``), like Mistral's tokenizer.
* :func:`tiny_qformer_tokenizer`: a BERT WordPiece tokenizer read from a ``vocab.txt`` it writes, lower-cased,
  with ``[DEC]`` added as BOS and left padding / truncation, as the official QFormer tokenizer.
* :func:`tiny_chat_config`: a small tower, QFormer and Mistral-architecture LLM whose vocabularies match
  these tokenizers. Nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from typing import Any

from iv2_data.synthetic import corpus_words

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
_PUNCTUATION = ".,:;?!()'\"-/"


def _prompt_texts() -> list[str]:
    # The package's own prompt strings: whatever they say, the tiny vocabulary covers it.
    from .mcqa import ANSWER_PROMPT, MVBENCH_SYSTEM, QUESTION_PROMPT
    from .train_data import ALIGNMENT_PROMPT

    return [MVBENCH_SYSTEM, QUESTION_PROMPT, ANSWER_PROMPT, ALIGNMENT_PROMPT,
            "Question: Options: The video contains frames sampled at seconds. image picture"]


def tiny_words(extra: Iterable[str] = ()) -> list[str]:
    """The tiny vocabulary (ordered, unique, lower case): the corpus words (``corpus_words()``), the prompt
    words, ``extra``, letters, digits and punctuation."""
    words = list(corpus_words())
    for text in [*_prompt_texts(), *extra]:
        words += re.findall(r"\w+|[^\w\s]", text.lower())
    words += [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(_PUNCTUATION)
    reserved = {t.lower() for t in (*LLM_SPECIAL, *MEDIA_TAGS)}
    return [w for w in dict.fromkeys(words) if w and w not in reserved]


def tiny_llm_tokenizer(extra_words: Iterable[str] = ()) -> Any:
    """Word-level Mistral-like fast tokenizer (see the module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*LLM_SPECIAL, *MEDIA_TAGS, *tiny_words(extra_words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()  # the vocabulary is lower case; special tokens match as written
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    # joins words with spaces, none before punctuation or a closing bracket: "(b) left."
    backend.decoder = decoders.Sequence([decoders.WordPiece(prefix="##", cleanup=True), decoders.Replace(" )", ")")])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["[INST]", "[/INST]"]})
    tokenizer.add_tokens([AddedToken(tag, normalized=False) for tag in MEDIA_TAGS])
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


def tiny_qformer_tokenizer(extra_words: Iterable[str] = ()) -> Any:
    """BERT tokenizer from a written ``vocab.txt`` (lower-cased words), with ``[DEC]`` as BOS, left padding
    and left truncation (the official QFormer tokenizer's settings)."""
    from transformers import BertTokenizer

    # WordPiece continuations of digits, so that numbers of several digits ("12.5 seconds") are not unknown
    words = list(dict.fromkeys([*BERT_SPECIAL, *tiny_words(extra_words), *(f"##{d}" for d in range(10))]))
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


def tiny_synthetic_chat_config(*, llm_vocab_size: int | None = None,
                               qformer_vocab_size: int | None = None) -> ChatConfig:
    """The demo's chat model (flavor ``tiny-synthetic``): the chat tower of ``internvideo2-tiny`` (56 px, 4
    frames, patch 14, 64-d; depth 2 − 1 = 1 block, every token, run-time position interpolation; the
    ``tiny-synthetic`` training flavor keeps both blocks: ``model.vision_return_index`` -1), a 2-layer
    64-d QFormer crossing to the tower in every layer, 4 + 4 queries, a 2-layer 64-d Mistral-architecture LLM
    with random weights and LoRA (r 16, α 32) on the official target modules.

    Sizes and initial scales chosen so that it learns the synthetic corpus on a CPU in minutes: the tower's
    LayerScale starts at 0.1 (1e-5 leaves a random block nearly switched off; a stage-2 ``vision_init`` brings
    its own), the QFormer initialises at std 0.1, the LLM at std 0.15 (at 0.02 a 64-d random LLM attends almost
    uniformly and LoRA does not find the option letters), dropout off."""
    llm_vocab_size = llm_vocab_size or len(tiny_llm_tokenizer())
    qformer_vocab_size = qformer_vocab_size or len(tiny_qformer_tokenizer())
    vision = chat_vision_config("internvideo2-tiny", init_values=0.1, interpolate_pos_embed_at_runtime=True)
    qformer = {
        "vocab_size": qformer_vocab_size, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 160, "initializer_range": 0.1,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "cross_attention_freq": 1, "encoder_width": vision.embed_dim,
        "drop_path_rate": 0.0,
    }
    llm = {
        "model_type": "mistral", "vocab_size": llm_vocab_size, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": None,
        "initializer_range": 0.15, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 5,
    }
    lora = {**OFFICIAL_LORA, "r": 16, "lora_alpha": 32, "lora_dropout": 0.0}
    return ChatConfig(vision=vision, qformer=qformer, num_query_tokens=4, extra_num_query_tokens=4, llm=llm,
                      lora=lora)
