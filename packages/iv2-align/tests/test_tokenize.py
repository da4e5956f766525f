"""The official caption encoding: pre_text, [CLS] + pieces, no [SEP], truncation to max_len - 1 pieces."""

import pytest
import torch

from iv2_align import tokenize

# vocab ids (conftest.VOCAB): [PAD]0 [UNK]1 [CLS]2 [SEP]3 [MASK]4 a5 man6 is7 playing8 guitar9 the10 dog11
# runs12 person13 cook14 ##ing15 play16 ##s17 on18 beach19 ... swim37


def test_hand_written_ids(tokenizer):
    ids, mask = tokenize(tokenizer, ["A man is playing guitar.", "The dog-runs on the beach!!",
                                     "<person> swims", "Cooking plays zebra"], max_length=8)
    assert ids.tolist() == [
        [2, 5, 6, 7, 8, 9, 0, 0],
        [2, 10, 11, 12, 18, 10, 19, 0],
        [2, 13, 37, 17, 0, 0, 0, 0],
        [2, 14, 15, 16, 17, 1, 0, 0],
    ]
    assert mask.tolist() == [
        [1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0],
    ]
    assert ids.dtype == mask.dtype == torch.long


def test_truncation_keeps_max_len_minus_one_pieces_and_no_sep(tokenizer):
    ids, mask = tokenize(tokenizer, ["a man is playing guitar"], max_length=4)
    assert ids.tolist() == [[2, 5, 6, 7]] and mask.tolist() == [[1, 1, 1, 1]]
    # a stock tokenizer call would have appended [SEP] (3)
    stock = tokenizer(["a man"], padding="max_length", max_length=4, truncation=True)["input_ids"][0]
    assert stock == [2, 5, 6, 3]
    ids, _ = tokenize(tokenizer, ["a man"], max_length=4)
    assert ids.tolist() == [[2, 5, 6, 0]]


def test_bad_captions(tokenizer):
    with pytest.raises(ValueError, match=r"caption 1 .*empty"):
        tokenize(tokenizer, ["a dog", "?!..."], max_length=8)
    with pytest.raises(TypeError, match="single string"):
        tokenize(tokenizer, "a dog", max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        tokenize(tokenizer, ["a dog"], max_length=1)
