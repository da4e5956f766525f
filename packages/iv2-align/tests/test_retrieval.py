"""Retrieval evaluation: the official metrics (hand-checked, ties included) and the ITC/ITM pipeline against the
float64 reference; streaming gives the same numbers as one big tensor."""

import pytest
import torch
from _align_reference import bert_fuse, bert_text, f64, itm_eval_reference, linear, vision_forward

from iv2_align import evaluate_retrieval, retrieval_metrics, tokenize

CAPTIONS = ["a man is playing guitar", "the man plays guitar", "a dog runs on the beach", "the dog runs",
            "a person cooking", "a red car", "a woman swim"]
TEXT_TO_VIDEO = [0, 0, 1, 1, 2, 3, 4]


def test_hand_checked_metrics_with_ties():
    v2t = torch.tensor([[0.5, 0.9, 0.9, 0.1],   # gt {0, 1}: order 2,1,0,3 -> best rank 1
                        [0.2, 0.2, 0.2, 0.2],   # gt {2}: all tied -> order 3,2,1,0 -> rank 1
                        [0.0, 0.0, 0.0, 1.0]])  # gt {3}: rank 0
    t2v = torch.tensor([[0.3, 0.3, 0.1],        # gt 0: order 1,0,2 -> rank 1
                        [0.7, 0.1, 0.2],        # gt 0: rank 0
                        [0.5, 0.5, 0.5],        # gt 1: order 2,1,0 -> rank 1
                        [0.1, 0.2, 0.2]])       # gt 2: order 2,1,0 -> rank 0
    metrics = retrieval_metrics(v2t, t2v, [0, 0, 1, 2])
    assert metrics == {"v2t_r1": 33.33, "v2t_r5": 100.0, "v2t_r10": 100.0, "v2t_r_mean": 77.78,
                       "t2v_r1": 50.0, "t2v_r5": 100.0, "t2v_r10": 100.0, "t2v_r_mean": 83.33, "r_mean": 80.56}


@pytest.mark.parametrize("seed", range(5))
def test_metrics_against_references_on_heavily_tied_scores(seed):
    g = torch.Generator().manual_seed(seed)
    num_videos, num_texts = 9, 14
    text_to_video = [int(v) for v in torch.randint(0, num_videos, (num_texts,), generator=g)]
    text_to_video[:num_videos] = list(range(num_videos))  # every video has a caption
    v2t = torch.randint(0, 3, (num_videos, num_texts), generator=g).float()
    t2v = torch.randint(0, 3, (num_texts, num_videos), generator=g).float()
    img2txt = [[t for t, v in enumerate(text_to_video) if v == i] for i in range(num_videos)]
    ours = retrieval_metrics(v2t, t2v, text_to_video)
    # ties in descending index order: REFERENCE o's reading of ``np.argsort(score)[::-1]`` (a stable sort;
    # numpy's SIMD argsort on AVX-512 machines is not stable, so the official order varies there)
    assert ours == itm_eval_reference(v2t, t2v, text_to_video, img2txt)


def test_several_ground_truth_videos_per_text():
    v2t = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.4]])
    t2v = torch.tensor([[0.1, 0.2, 0.9], [0.3, 0.9, 0.1]])
    metrics = retrieval_metrics(v2t, t2v, [[0, 2], [1]])  # text 0 shows videos 0 and 2
    assert metrics["t2v_r1"] == 100.0 and metrics["v2t_r1"] == 100.0


def _videos(n=5, seed=0):
    return torch.randn(n, 3, 4, 56, 56, generator=torch.Generator().manual_seed(seed))


def test_pipeline_against_float64_reference(tiny_model, tokenizer):
    videos = _videos()
    ids, mask = tokenize(tokenizer, CAPTIONS, 10)
    k = 3
    result = evaluate_retrieval(tiny_model, [videos[:2], videos[2:4], videos[4:]], ids, mask,
                                text_to_video=TEXT_TO_VIDEO, k_test=k, itm_batch_size=4)
    sd = f64(tiny_model.state_dict())
    vsd = {n[len("vision_encoder."):]: v for n, v in sd.items() if n.startswith("vision_encoder.")}
    tsd = {n[len("text_encoder."):]: v for n, v in sd.items() if n.startswith("text_encoder.")}
    v_tokens, pooled = vision_forward(vsd, videos, heads=4, pool_heads=4)
    t_tokens = bert_text(tsd, ids, mask, 2, 4)
    v_feat = linear(pooled, sd, "vision_proj")
    t_feat = linear(t_tokens[:, 0], sd, "text_proj")
    itc = (v_feat / v_feat.norm(dim=-1, keepdim=True)) @ (t_feat / t_feat.norm(dim=-1, keepdim=True)).T
    torch.testing.assert_close(result.itc.double(), itc, atol=1e-5, rtol=0)

    def itm(v, t):
        fused = bert_fuse(tsd, t_tokens[t:t + 1], mask[t:t + 1], v_tokens[v:v + 1], 2, 3, 4)
        return linear(fused[:, 0], sd, "itm_head")[0, 1].item()

    ref_v2t = torch.full((5, 7), -100.0, dtype=torch.float64)
    for v in range(5):
        for t in itc[v].topk(k).indices.tolist():
            ref_v2t[v, t] = itm(v, t)
    ref_t2v = torch.full((7, 5), -100.0, dtype=torch.float64)
    for t in range(7):
        for v in itc[:, t].topk(k).indices.tolist():
            ref_t2v[t, v] = itm(v, t)
    torch.testing.assert_close(result.itm_v2t.double(), ref_v2t, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.itm_t2v.double(), ref_t2v, atol=1e-5, rtol=0)

    # metrics: each variant row-softmaxed (dsl from ITC only), ranked with the official tie rule
    img2txt = [[t for t, v in enumerate(TEXT_TO_VIDEO) if v == i] for i in range(5)]
    s = result.itc.float()
    dsl_v2t, dsl_t2v = s * s.softmax(0), s.T * s.T.softmax(0)
    expected = {"sim": (s.softmax(1), s.T.softmax(1)), "dsl": (dsl_v2t.softmax(1), dsl_t2v.softmax(1)),
                "match": (result.itm_v2t.softmax(1), result.itm_t2v.softmax(1))}
    for name, (a, b) in expected.items():
        assert result.metrics[name] == itm_eval_reference(a, b, TEXT_TO_VIDEO, img2txt), name
    assert not tiny_model.training


def test_streaming_matches_one_tensor_and_fusion_stays_small(tiny_model, tokenizer, monkeypatch):
    videos = _videos(seed=1)
    ids, mask = tokenize(tokenizer, CAPTIONS, 10)
    whole = evaluate_retrieval(tiny_model, videos, ids, mask, text_to_video=TEXT_TO_VIDEO, k_test=2, batch_size=5,
                               itm_batch_size=32)
    seen = []
    fuse = tiny_model.fuse

    def recording_fuse(media, text, attention_mask):
        seen.append(media.shape[0])
        return fuse(media, text, attention_mask)

    monkeypatch.setattr(tiny_model, "fuse", recording_fuse)
    streamed = evaluate_retrieval(tiny_model, iter(videos.split(2)), ids, mask, text_to_video=TEXT_TO_VIDEO,
                                  k_test=2, itm_batch_size=3)
    torch.testing.assert_close(streamed.itc, whole.itc, atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed.itm_v2t, whole.itm_v2t, atol=1e-5, rtol=0)
    torch.testing.assert_close(streamed.itm_t2v, whole.itm_t2v, atol=1e-5, rtol=0)
    assert streamed.metrics == whole.metrics
    # the fusion sees at most itm_batch_size pairs at a time, each needed pair once
    assert max(seen) <= 3 and sum(seen) <= 5 * 2 + 7 * 2


@pytest.mark.parametrize("k_test", [0, 2, 128])
def test_keep_scores_false_gives_the_whole_matrix_numbers_in_row_chunks(tiny_model, tokenizer, k_test):
    """The large-set path (no videos x texts matrix, score rows in chunks, the dsl column softmax streamed)
    against the whole-matrix path, on scores with several captions per video; chunks of 2 rows split them."""
    videos = _videos(seed=4)
    ids, mask = tokenize(tokenizer, CAPTIONS, 10)
    whole = evaluate_retrieval(tiny_model, videos, ids, mask, text_to_video=TEXT_TO_VIDEO, k_test=k_test)
    rows = evaluate_retrieval(tiny_model, videos, ids, mask, text_to_video=TEXT_TO_VIDEO, k_test=k_test,
                              keep_scores=False, chunk_rows=2)
    assert rows.itc is None and rows.itm_v2t is None
    assert rows.metrics == whole.metrics and set(rows.metrics) == ({"sim", "dsl", "match"} if k_test else {"sim", "dsl"})


def test_keep_scores_false_on_audio_video(tiny_av_model, tokenizer):
    videos, fbank = _videos(3, seed=2), torch.randn(3, 998, 64, generator=torch.Generator().manual_seed(3))
    ids, mask = tokenize(tokenizer, CAPTIONS[:4], 10)
    kwargs = dict(text_to_video=[0, 0, 1, 2], k_test=2, fbank=fbank, media="audio_video")
    whole = evaluate_retrieval(tiny_av_model, videos, ids, mask, **kwargs)
    rows = evaluate_retrieval(tiny_av_model, videos, ids, mask, keep_scores=False, chunk_rows=1, **kwargs)
    assert rows.metrics == whole.metrics


def test_k_test_larger_than_the_set_reranks_everything(tiny_model, tokenizer):
    ids, mask = tokenize(tokenizer, CAPTIONS, 10)
    result = evaluate_retrieval(tiny_model, _videos(), ids, mask, text_to_video=TEXT_TO_VIDEO, k_test=128)
    assert (result.itm_v2t != -100).all() and (result.itm_t2v != -100).all()
    torch.testing.assert_close(result.itm_v2t.T, result.itm_t2v, atol=1e-5, rtol=0)  # same pairs both ways


def test_audio_video_retrieval_uses_av_fusion_and_avtm(tiny_av_model, tokenizer):
    import torch.nn.functional as F

    m = tiny_av_model
    videos, fbank = _videos(3, seed=2), torch.randn(3, 998, 64, generator=torch.Generator().manual_seed(3))
    ids, mask = tokenize(tokenizer, CAPTIONS[:4], 10)
    t2v = [0, 0, 1, 2]
    result = evaluate_retrieval(m, videos, ids, mask, text_to_video=t2v, k_test=2, fbank=fbank, media="audio_video")
    with torch.no_grad():
        a_tokens, a_pooled = m.encode_audio(fbank)
        v_tokens, v_pooled = m.encode_video(videos)
        text_tokens, cls = m.encode_text(ids, mask)
        media_feat = F.normalize(m.audio_video_features(a_pooled, v_pooled), dim=-1)
        itc = media_feat @ F.normalize(m.text_features(cls), dim=-1).T
        media = torch.cat([a_tokens, v_tokens], 1)
        full = torch.stack([m.match_logits(media, text_tokens[t:t + 1].expand(3, -1, -1), mask[t:t + 1].expand(3, -1),
                                           head="avtm")[:, 1] for t in range(4)], 1)  # (videos, texts)
    torch.testing.assert_close(result.itc, itc, atol=1e-5, rtol=0)
    picked = result.itm_v2t != -100
    assert picked.sum(1).tolist() == [2, 2, 2]
    torch.testing.assert_close(result.itm_v2t[picked], full[picked], atol=1e-5, rtol=0)
    assert set(result.metrics) == {"sim", "dsl", "match"}


def test_bad_inputs(tiny_model, tokenizer):
    ids, mask = tokenize(tokenizer, CAPTIONS, 10)
    videos = _videos()
    with pytest.raises(ValueError, match="videos \\[4\\] have no caption"):
        evaluate_retrieval(tiny_model, videos, ids, mask, text_to_video=[0, 0, 1, 1, 2, 3, 3])
    with pytest.raises(ValueError, match="not a video index"):
        evaluate_retrieval(tiny_model, videos, ids, mask, text_to_video=[0, 0, 1, 1, 2, 3, 9])
    with pytest.raises(ValueError, match="entries for 7 texts"):
        evaluate_retrieval(tiny_model, videos, ids, mask, text_to_video=[0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="needs fbank"):
        evaluate_retrieval(tiny_model, videos, ids, mask, text_to_video=TEXT_TO_VIDEO, media="audio_video")
    with pytest.raises(ValueError, match="batch 1 must be a 5-D tensor"):
        evaluate_retrieval(tiny_model, [videos, videos[0]], ids, mask, text_to_video=TEXT_TO_VIDEO)
