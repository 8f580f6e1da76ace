"""Ranking metrics against hand-computed values: ties, masking, padding, large k, NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from padrec.eval.metrics import metrics_from_ranks, sampled_ranks, target_ranks


def test_metrics_match_hand_computed_values():
    m = metrics_from_ranks([0, 3, 12], ks=(5, 10, 20))
    assert m["HR@5"] == pytest.approx(2 / 3)
    assert m["HR@10"] == pytest.approx(2 / 3)
    assert m["HR@20"] == pytest.approx(1.0)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert m["NDCG@20"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(14)) / 3)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 4) / 3)
    assert m["MRR@20"] == pytest.approx((1 + 1 / 4 + 1 / 13) / 3)
    for k in (5, 10, 20):
        assert m[f"Recall@{k}"] == m[f"HR@{k}"]  # one target per user


def test_metric_keys_are_grouped_by_family_and_sorted_k():
    assert list(metrics_from_ranks([1], ks=(10, 5))) == [
        "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR@5", "MRR@10", "Recall@5", "Recall@10",
    ]  # fmt: skip


def test_empty_ranks_are_nan_and_bad_k_rejected():
    assert all(math.isnan(v) for v in metrics_from_ranks([], ks=(10,)).values())
    with pytest.raises(ValueError):
        metrics_from_ranks([0], ks=(0,))


def test_target_rank_counts_items_scoring_higher():
    #                       pad   1    2    3    4
    scores = torch.tensor([[0.0, 0.1, 0.5, 0.3, 0.9]])
    assert target_ranks(scores, [3]).tolist() == [2]  # items 4 and 2 ahead
    assert target_ranks(scores, [4]).tolist() == [0]
    assert target_ranks(scores, [1]).tolist() == [3]


def test_ties_are_pessimistic_a_constant_model_gets_no_credit():
    scores = torch.zeros(2, 6)  # 5 real items, all tied
    assert target_ranks(scores, [1, 5]).tolist() == [4, 4]
    assert metrics_from_ranks(target_ranks(scores, [1, 5]), ks=(4,))["HR@4"] == 0.0
    partial = torch.tensor([[0.0, 0.2, 0.7, 0.7, 0.1]])  # target 2 tied with item 3
    assert target_ranks(partial, [2]).tolist() == [1]
    assert target_ranks(partial, [3]).tolist() == [1]


def test_history_items_are_masked():
    # the model likes the history (items 1, 2) best, then the target (3)
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 1.0, 0.5]])
    assert target_ranks(scores, [3]).tolist() == [2]
    assert target_ranks(scores, [3], exclude=[np.array([1, 2])]).tolist() == [0]


def test_target_in_history_is_not_masked():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 1.0, 0.5]])
    # re-consumption: the target 1 is also in the history and must stay rankable (rank 0)
    assert target_ranks(scores, [1], exclude=[np.array([1, 2, 1])]).tolist() == [0]
    # masked items never count ahead, even against a -inf target
    low = torch.tensor([[0.0, 1.0, -math.inf, 2.0]])
    assert target_ranks(low, [2], exclude=[np.array([1, 3])]).tolist() == [0]


def test_padding_column_never_ranks():
    scores = torch.tensor([[100.0, 0.1, 0.5, 0.3]])
    assert target_ranks(scores, [2]).tolist() == [0]
    with pytest.raises(ValueError):
        target_ranks(scores, [0])  # padding is not a target


def test_k_larger_than_the_catalogue():
    scores = torch.zeros(3, 4)  # 3 items: worst possible rank is 2
    ranks = target_ranks(scores, [1, 2, 3])
    assert ranks.tolist() == [2, 2, 2]
    m = metrics_from_ranks(ranks, ks=(10, 100))
    assert m["HR@100"] == 1.0 and m["NDCG@10"] == pytest.approx(1 / math.log2(4))


def test_nan_target_gets_the_worst_rank():
    scores = torch.tensor([[0.0, math.nan, 0.2, 0.1], [0.0, 0.3, math.nan, 0.1]])
    assert target_ranks(scores, [1, 1]).tolist() == [2, 0]  # NaN elsewhere never counts ahead
    neg = np.array([[2, 3], [2, 3]])
    assert sampled_ranks(scores, [1, 1], neg).tolist() == [2, 0]


def test_scores_are_not_modified_and_layout_does_not_matter():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(7, 11, generator=g)
    before = scores.clone()
    targets = np.arange(1, 8)
    hist = [np.array([1, 2, 3])] * 7
    expected = target_ranks(scores, targets, hist)
    assert torch.equal(scores, before)
    fortran = scores.T.contiguous().T  # same values, column-major
    assert np.array_equal(target_ranks(fortran, targets, hist), expected)
    assert np.array_equal(target_ranks(scores.numpy(), targets, hist), expected)
    assert np.array_equal(
        target_ranks(scores.half(), targets, hist), target_ranks(scores.half().float(), targets, hist)
    )
    row = scores[:1].expand(7, -1)  # a broadcast view, as a popularity model returns
    assert np.array_equal(target_ranks(row, targets, hist), target_ranks(row.contiguous(), targets, hist))


def test_sampled_rank_hand_computed_and_pessimistic():
    #                        pad   1    2    3    4    5
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.5, 0.1, 0.7]])
    assert sampled_ranks(scores, [2], np.array([[3, 4, 5]])).tolist() == [2]  # 5 ahead, 3 tied
    assert sampled_ranks(scores, [1], np.array([[3, 4, 5]])).tolist() == [0]
    assert sampled_ranks(torch.zeros(1, 6), [1], np.array([[2, 3, 4]])).tolist() == [3]


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        target_ranks(torch.zeros(2, 4), [1])
    with pytest.raises(ValueError):
        target_ranks(torch.zeros(1, 4), [1], exclude=[np.array([9])])
    with pytest.raises(ValueError):
        sampled_ranks(torch.zeros(2, 4), [1, 1], np.array([[2, 3]]))


def test_device_path_agrees_with_the_numpy_path():
    from padrec.eval.metrics import _target_ranks_torch, flat_indices

    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (9, 8), generator=g).float()  # many ties
    scores[2, 5] = math.nan
    targets = np.array([1, 2, 3, 4, 5, 6, 7, 1, 5])
    hist = [np.array([1, 3]), np.array([]), np.array([4, 4, 2])] * 3
    flat = flat_indices(tuple(scores.shape), hist)
    expected = target_ranks(scores, targets, hist)
    assert np.array_equal(_target_ranks_torch(scores, targets, flat), expected)
    assert np.array_equal(_target_ranks_torch(scores.T.contiguous().T, targets, flat), expected)
