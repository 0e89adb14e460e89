"""The CPU training attention: gathering each query block's visible keys (attention.gather_plan) gives
the outputs and gradients of one SDPA call over the rule's dense mask, for every memory policy, and
computes fewer (q, kv) pairs where the rule hides most of the sequence.

Plausible bugs this catches: a key visible to one query of a block (or one batch row) left out of
the block's gather, the mask slice not matching the gathered keys, blocks concatenated out of order,
the last short block dropped.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from memorywam_ros.model import MEMORY_POLICIES, MemoryConfig, MemoryRules, MemoryWAM, attention

# a plain run of frames and one with the anchors prepended to a late window (different visibility per row)
FRAME_IDS = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 9, 10, 11, 12, 13, 14]])


def _setup(policy: str, frame_ids: torch.Tensor = FRAME_IDS, video: bool = True, L: int = 6, M: int = 2, K: int = 5):
    rules = MemoryRules(MemoryConfig(policy=policy, n_init=2, n_recent=2, num_gists=M))
    return rules, *MemoryWAM.sequence_metadata(frame_ids, L, M, K, video)


@pytest.fixture(autouse=True)
def _fresh_plan_cache():
    attention._plan_cache.clear()
    yield
    attention._plan_cache.clear()


@pytest.mark.parametrize("policy", MEMORY_POLICIES)
@pytest.mark.parametrize("video,block", [(True, 7), (True, 32), (False, 16)])
def test_gathered_attention_equals_dense_sdpa(policy, video, block, monkeypatch):
    rules, frame, kind, group = _setup(policy, video=video)
    monkeypatch.setattr(attention, "GATHER_BLOCK", block)  # 7: blocks straddle every token run
    monkeypatch.setattr(attention, "GATHER_MAX_FRACTION", 1.0)  # always gather
    s = frame.shape[1]
    gen = torch.Generator().manual_seed(0)
    qkv = [torch.randn(2, 2, s, 8, generator=gen, requires_grad=True) for _ in range(3)]
    layer = attention.MemoryMaskedAttention(rules, frame, kind, group, use_flex=False)
    assert layer.plan.dense is None and len(layer.plan.blocks) == -(-s // block)
    ours = layer(*qkv)
    grad = torch.randn(ours.shape, generator=gen)
    ours_grads = torch.autograd.grad(ours, qkv, grad)
    reference = F.scaled_dot_product_attention(*qkv, attn_mask=rules.dense_mask(frame, kind, group))
    reference_grads = torch.autograd.grad(reference, qkv, grad)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    for a, b in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_gathering_skips_what_the_rule_hides():
    """At 30 frames (24 tokens + 4 gists each) a hybrid query block sees anchors, its window and gists:
    ~15 % of the pairs (measured 0.149), `full` (causal; no one sees another frame's noisy or action
    tokens) ~26 %; one frame (everything visible) falls back to one dense call."""
    ids = torch.arange(30)[None]
    fractions = {}
    for policy in ("hybrid", "window", "full"):
        rules, frame, kind, group = _setup(policy, ids, L=24, M=4, K=8)
        plan = attention.gather_plan(rules, frame, kind, group, block=64, max_fraction=1.0)
        fractions[policy] = plan.fraction
        assert plan.dense is None
        visible = rules.dense_mask(frame, kind, group).float().mean().item()
        assert visible <= plan.fraction < 3 * visible  # every visible pair, and not many more
    assert fractions["window"] < fractions["hybrid"] < 0.2 < fractions["full"] < 0.3
    rules, frame, kind, group = _setup("hybrid", torch.arange(1)[None], video=False)
    plan = attention.gather_plan(rules, frame, kind, group, block=64)
    assert plan.dense is not None and plan.blocks == [] and plan.fraction > attention.GATHER_MAX_FRACTION


def test_plan_is_reused_for_the_same_metadata_only():
    rules, frame, kind, group = _setup("hybrid")
    first = attention.MemoryMaskedAttention(rules, frame, kind, group, use_flex=False).plan
    assert attention.MemoryMaskedAttention(rules, frame, kind, group, use_flex=False).plan is first
    late = frame.clone()
    late[late >= 2] += 1  # same shape, other frame ids
    assert attention.MemoryMaskedAttention(rules, late, kind, group, use_flex=False).plan is not first


def test_plan_cache_keys_on_the_rules_value_not_their_identity():
    """CI once served a `hybrid` plan to a `no_window` model: the cache keyed on id(rules), and a
    garbage-collected rules object's id was reused by the next test's. Equal rules share a plan,
    rules that differ (same metadata) never do, whichever objects are alive."""
    rules, frame, kind, group = _setup("hybrid")
    first = attention.cached_gather_plan(rules, frame, kind, group)
    twin = MemoryRules(MemoryConfig(policy="hybrid", n_init=2, n_recent=2, num_gists=2))
    assert attention.cached_gather_plan(twin, frame, kind, group) is first
    for policy in ("no_window", "no_anchor", "full"):
        other = MemoryRules(MemoryConfig(policy=policy, n_init=2, n_recent=2, num_gists=2))
        plan = attention.cached_gather_plan(other, frame, kind, group)
        assert plan is not first
        torch.testing.assert_close(_plan_mask(plan), other.dense_mask(frame, kind, group).float())
    wider = MemoryRules(MemoryConfig(policy="hybrid", n_init=2, n_recent=3, num_gists=2))
    assert attention.cached_gather_plan(wider, frame, kind, group) is not first


def _plan_mask(plan: attention.GatherPlan) -> torch.Tensor:
    """The dense mask a plan stands for, rebuilt from its blocks."""
    if plan.dense is not None:
        return plan.dense.float()
    length = plan.blocks[-1][1]
    batch = plan.blocks[0][3].shape[0]
    out = torch.zeros(batch, 1, length, length)
    for start, stop, keys, mask in plan.blocks:
        out[:, :, start:stop].index_copy_(-1, keys, mask.float())
    return out
