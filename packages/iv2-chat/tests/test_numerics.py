"""Vision tokens, QFormer outputs and projected embeddings vs independent float64 references (1e-5); LLM
logits and loss through the assembled embeddings (1e-4)."""

import copy

import pytest
import torch
from _chat_reference import visual_embeds

from iv2_chat import (
    collate_training,
    tokenize_training_conversation,
    training_conversation,
)


def _reference(model, video, ids=None, mask=None):
    cfg, q = model.cfg, model.cfg.qformer_dict()
    return visual_embeds(model.state_dict(), video, vision_heads=cfg.vision.num_heads, depth=cfg.vision.depth,
                         q_heads=q["num_attention_heads"], q_layers=q["num_hidden_layers"],
                         freq=q["cross_attention_freq"], input_ids=ids, text_mask=mask)


def _assert_close(ours, ref, atol):
    err = (ours.double() - ref).abs().max().item()
    assert err < atol, f"max abs error {err:.2e} (tolerance {atol:.0e}, reference scale {ref.abs().max():.2f})"


@pytest.mark.parametrize("with_instruction", [False, True])
def test_visual_path_matches_float64_reference(make_model, qformer_tokenizer, with_instruction):
    model = make_model(seed=1)
    video = torch.randn(2, 3, 4, 28, 28, generator=torch.Generator().manual_seed(0))
    ids = mask = None
    if with_instruction:  # two lengths: the shorter is left-padded and its positions shift
        enc = qformer_tokenizer(["watch the video", "watch the red circle move left across the background"],
                                padding="longest", return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        assert mask[0, 0] == 0 and mask[1].all()
    with torch.no_grad():
        out = model.encode_video(video, ids, mask)
    tokens, query_output, embeds = _reference(model, video, ids, mask)
    assert out.vision_tokens.shape == (2, 1 + 4 * 2 * 2, 32)
    assert out.query_output.shape == (2, 8, 32) and out.embeds.shape == (2, 8, 48)
    _assert_close(out.vision_tokens, tokens, 1e-5)
    _assert_close(out.query_output, query_output, 1e-5)
    _assert_close(out.embeds, embeds, 1e-5)


def test_instruction_changes_the_queries(make_model, qformer_tokenizer):
    model = make_model(seed=2)
    video = torch.randn(1, 3, 4, 28, 28)
    enc = qformer_tokenizer(["watch the video"], return_tensors="pt")
    with torch.no_grad():
        plain = model.encode_video(video).query_output
        told = model.encode_video(video, enc["input_ids"], enc["attention_mask"]).query_output
    assert (plain - told).abs().max() > 1e-3


def test_image_uses_the_image_position_table(make_model):
    model = make_model(seed=3)
    image = torch.randn(2, 3, 1, 28, 28)
    with torch.no_grad():
        out = model.encode_video(image)
    tokens, query_output, embeds = _reference(model, image)
    assert out.vision_tokens.shape == (2, 1 + 4, 32)
    _assert_close(out.vision_tokens, tokens, 1e-5)
    _assert_close(out.query_output, query_output, 1e-5)
    _assert_close(out.embeds, embeds, 1e-5)


@pytest.mark.parametrize("frames,size", [(8, 28), (16, 28), (2, 42), (8, 42), (1, 42)])
def test_other_frame_counts_and_sizes_interpolate_at_run_time(make_model, qformer_tokenizer, frames, size):
    """16-frame MVBench on the 4-frame tower, other sizes, an image at another size: the position table is
    resampled at every forward as the official chat tower does (checked against the float64 reference)."""
    model = make_model(seed=7)
    video = torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(frames * size))
    enc = qformer_tokenizer(["watch", "watch the red circle"], padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = model.encode_video(video, enc["input_ids"], enc["attention_mask"])
    tokens, query_output, embeds = _reference(model, video, enc["input_ids"], enc["attention_mask"])
    assert out.vision_tokens.shape == (2, 1 + frames * (size // 14) ** 2, 32)
    _assert_close(out.vision_tokens, tokens, 1e-5)
    _assert_close(out.query_output, query_output, 1e-5)
    _assert_close(out.embeds, embeds, 1e-5)


def test_frames_that_do_not_fit_the_patches_are_errors(make_model):
    with pytest.raises(ValueError, match="not a \\(non-zero\\) multiple of the patch size 14"):
        make_model().encode_video(torch.randn(1, 3, 4, 30, 30))


def test_bad_instruction_shapes_are_errors(make_model):
    model = make_model()
    video = torch.randn(2, 3, 4, 28, 28)
    with pytest.raises(ValueError, match=r"instruction_ids must be \(B, L\) with B = 2"):
        model.encode_video(video, torch.ones(3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="instruction_mask must have the shape"):
        model.encode_video(video, torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))


def _llm_reference(model, batch_rows, visual, ids_batch):
    """Embeddings assembled by hand in float64 (BOS embedding, text embeddings, visual rows, right padding)
    through a float64 copy of the LLM; loss = mean over supervised tokens of -log p(next token)."""
    lm64 = copy.deepcopy(model.lm).double().eval()
    table = lm64.get_input_embeddings().weight
    rows = []
    for ids, vis, vis_embeds in zip(ids_batch.input_ids, ids_batch.visual_mask, visual):
        emb = table[ids].clone()
        emb[vis] = vis_embeds
        rows.append(emb)
    with torch.no_grad():
        logits = lm64(inputs_embeds=torch.stack(rows), attention_mask=ids_batch.attention_mask).logits
    labels = ids_batch.labels[:, 1:]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    supervised = labels != -100
    return logits, -(picked * supervised).sum() / supervised.sum()


def test_llm_logits_and_loss_through_assembled_embeddings(make_model, llm_tokenizer):
    model = make_model(seed=4)
    video = torch.randn(2, 3, 4, 28, 28, generator=torch.Generator().manual_seed(5))
    qa = [[{"q": "What colour is the moving circle?", "a": "It is red."}],
          [{"q": "Describe the video briefly.", "a": "A blue square moves left."},
           {"q": "Where does it move?", "a": "It moves left."}]]
    samples = [tokenize_training_conversation(llm_tokenizer, training_conversation(t)[0]) for t in qa]
    batch = collate_training(samples, model.num_visual_tokens, bos_token_id=1, pad_token_id=5)
    with torch.no_grad():
        out = model(**batch.model_inputs(), video=video)
    _, _, ref_embeds = _reference(model, video)
    ref_logits, ref_loss = _llm_reference(model, None, ref_embeds, batch)
    keep = batch.attention_mask.bool()
    _assert_close(out.logits[keep], ref_logits[keep], 1e-4)
    assert abs(out.loss.item() - ref_loss.item()) < 1e-4
    assert batch.labels.ne(-100).sum() > 0


def test_scalar_bos_fill_reproduces_the_stage3_trainer(make_model, llm_tokenizer):
    model = make_model(seed=6)
    video = torch.randn(1, 3, 4, 28, 28)
    sample = tokenize_training_conversation(llm_tokenizer, training_conversation([{"q": "Where?", "a": "left"}])[0])
    batch = collate_training([sample], model.num_visual_tokens, bos_token_id=1, pad_token_id=5, bos_fill="scalar")
    visual = model.encode_video(video).embeds
    embeds = model.embed_inputs(batch.input_ids, batch.visual_mask, visual, batch.bos_scalar_mask)
    assert torch.equal(embeds[0, 0], torch.ones(48))  # the scalar BOS id (1) in every channel
    plain = model.embed_inputs(batch.input_ids, batch.visual_mask, visual)
    assert torch.equal(plain[0, 0], model.lm.get_input_embeddings().weight[1])
    assert torch.equal(embeds[0, 1:], plain[0, 1:])
