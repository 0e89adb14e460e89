"""The GPU training attention (flex attention): its block mask is the rule's, it is built without an
S x S tensor, and compiled flex attention compiles once per length bucket, not once per length.

Flex attention runs here on CPU (forward only; CPU flex has no backward). Compiles are counted
with dynamo's CompileCounterWithBackend("aot_eager"): recompilation is decided by dynamo's guards
on the inputs (shapes, the BlockMask's tensors and ints, the mask_mod closure), before and
independently of the backend, so the count is the one inductor sees on CUDA, without its
minutes of kernel compilation.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from memorywam_ros.model import MEMORY_POLICIES, MemoryConfig, MemoryRules, MemoryWAM

flex = pytest.importorskip("torch.nn.attention.flex_attention")
from memorywam_ros.model import attention  # noqa: E402

# (frame ids per batch row): a plain window and one with anchors prepended to a late window
FRAME_IDS = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [0, 1, 9, 10, 11, 12, 13]])


def metadata(frame_ids: torch.Tensor = FRAME_IDS, L: int = 6, M: int = 2, K: int = 5, video: bool = True):
    return MemoryWAM.sequence_metadata(frame_ids, L, M, K, video)


def rules_for(policy: str) -> MemoryRules:
    return MemoryRules(MemoryConfig(policy=policy, n_init=2, n_recent=2, num_gists=2))


def dense_block_mask(rules: MemoryRules, frame, kind, group, block: int):
    """torch's own create_block_mask: evaluates the rule on every (q, kv) pair (the reference)."""

    def mask_mod(b, h, q, kv):
        return rules.visible(frame[b, q], kind[b, q], group[b, q], frame[b, kv], kind[b, kv], group[b, kv])

    length = frame.shape[1]
    return flex.create_block_mask(mask_mod, frame.shape[0], None, length, length, device="cpu", BLOCK_SIZE=block)


def block_states(mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) block-level boolean tensors of a BlockMask."""
    n = mask.kv_indices.shape[-1]
    partial = flex._ordered_to_dense(mask.kv_num_blocks, mask.kv_indices, n).bool()
    full = flex._ordered_to_dense(mask.full_kv_num_blocks, mask.full_kv_indices, n).bool()
    return partial, full


@pytest.mark.parametrize("policy", MEMORY_POLICIES)
@pytest.mark.parametrize("video,block", [(True, 8), (True, 16), (False, 8)])
def test_block_mask_equals_create_block_mask(policy, video, block):
    """Every block empty / partial / full exactly as torch's dense evaluation says; the length is not a
    multiple of the block (its last block is never full there either)."""
    rules = rules_for(policy)
    frame, kind, group = metadata(video=video)
    assert frame.shape[1] % block  # the ragged last block is exercised
    ours = attention.memory_block_mask(rules, frame, kind, group, block=block)
    reference = dense_block_mask(rules, frame, kind, group, block)
    for got, expected in zip(block_states(ours), block_states(reference)):
        assert torch.equal(got, expected)
    assert torch.equal(ours.kv_num_blocks, reference.kv_num_blocks)
    assert torch.equal(ours.full_kv_num_blocks, reference.full_kv_num_blocks)
    partial, full = block_states(ours)
    assert partial.any() and not (partial | full).all()  # not vacuous: partial and empty blocks
    assert full.any() or policy != "hybrid"  # and full ones (the paper's policy)


def test_mask_mod_is_the_dense_rule():
    """The per-element mask_mod (resolving partial blocks) equals the CPU path's dense mask."""
    rules = rules_for("hybrid")
    frame, kind, group = metadata()
    mask = attention.memory_block_mask(rules, frame, kind, group)
    b, s = frame.shape
    index = torch.arange(s)
    per_element = mask.mask_mod(torch.arange(b)[:, None, None], 0, index[None, :, None], index[None, None, :])
    assert torch.equal(per_element, rules.dense_mask(frame, kind, group)[:, 0])


def test_padding_is_invisible_and_isolated():
    """Padding to a bucket hides the padded keys from every real query and shows each padded query
    only its own 128-token block, so the kernel spends one diagonal block per padded block."""
    rules = rules_for("hybrid")
    frame, kind, group = metadata()
    s = frame.shape[1]
    padded = attention.pad_metadata(frame, kind, group, attention.bucket_length(s))
    dense = rules.dense_mask(*padded)[:, 0]
    assert torch.equal(dense[:, :s, :s], rules.dense_mask(frame, kind, group)[:, 0])
    assert not dense[:, :s, s:].any() and not dense[:, s:, :s].any()
    partial, full = block_states(attention.memory_block_mask(rules, *padded))
    first_pad = -(-s // attention.BLOCK_SIZE)  # the first block holding only padding
    tail = (partial | full)[:, 0, first_pad:, first_pad:]
    assert torch.equal(tail, torch.eye(tail.shape[-1], dtype=torch.bool).expand_as(tail))


def test_flex_padded_equals_dense_attention():
    """MemoryMaskedAttention's flex path (padded, analytic block mask) == the dense SDPA path."""
    rules = rules_for("hybrid")
    frame, kind, group = metadata()
    q, k, v = (torch.randn(2, 2, frame.shape[1], 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    dense = attention.MemoryMaskedAttention(rules, frame, kind, group, use_flex=False)(q, k, v)
    ours = attention.MemoryMaskedAttention(rules, frame, kind, group, use_flex=True, compiled=False)(q, k, v)
    torch.testing.assert_close(ours, dense, atol=1e-5, rtol=0)


def test_compiled_flex_compiles_once_per_bucket():
    """Seven episode lengths (S 80..272) and two frame-id patterns: one compile, the padded bucket.
    A length in the next bucket (2048) is the second. (Without buckets dynamo compiled once per
    length and fell back to unfused attention at the 9th.)"""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    rules = rules_for("hybrid")
    lengths = set()
    with torch.no_grad():
        for n in range(2, 9):
            for ids in (torch.arange(n)[None], torch.tensor([[0, 1, *range(7, 5 + n)]])):
                frame, kind, group = metadata(ids, L=4, M=2, K=16)
                lengths.add(frame.shape[1])
                q, k, v = (torch.randn(1, 1, frame.shape[1], 8) for _ in range(3))
                att = attention.MemoryMaskedAttention(rules, frame, kind, group, use_flex=True, backend=counter)
                expected = dense_attention(rules, frame, kind, group, q, k, v)
                torch.testing.assert_close(att(q, k, v), expected, atol=1e-5, rtol=0)
        assert len(lengths) == 7 and counter.frame_count == 1
        frame, kind, group = metadata(torch.arange(40)[None], L=4, M=2, K=16)  # S = 1636 -> bucket 2048
        q, k, v = (torch.randn(1, 1, frame.shape[1], 8) for _ in range(3))
        attention.MemoryMaskedAttention(rules, frame, kind, group, use_flex=True, backend=counter)(q, k, v)
    assert counter.frame_count == 2
    torch._dynamo.reset()


def dense_attention(rules, frame, kind, group, q, k, v):
    return attention.MemoryMaskedAttention(rules, frame, kind, group, use_flex=False)(q, k, v)


def test_block_mask_cache_reuses_same_metadata_only():
    rules = rules_for("hybrid")
    a = attention.cached_block_mask(rules, *metadata())
    assert attention.cached_block_mask(rules, *metadata()) is a
    other = FRAME_IDS.clone()
    other[1, 2:] += 1  # same shape, different frame ids: a different mask
    assert attention.cached_block_mask(rules, *metadata(other)) is not a


PAPER_MASK_MEMORY = """
import json, resource, torch
from memorywam_ros.model import MemoryConfig, MemoryRules, MemoryWAM
from memorywam_ros.model import attention
rules = MemoryRules(MemoryConfig())
frame, kind, group = MemoryWAM.sequence_metadata(torch.arange(64)[None], 120, 8, 16, True)
padded = attention.pad_metadata(frame, kind, group, attention.bucket_length(frame.shape[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mask = attention.memory_block_mask(rules, *padded)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"S": frame.shape[1], "padded": padded[0].shape[1], "growth_kib": after - before,
                  "blocks": int(mask.kv_num_blocks.sum() + mask.full_kv_num_blocks.sum())}))
"""


def test_block_mask_memory_is_bounded_at_paper_size():
    """64 paper frames (S = 16776, padded 32768): building the mask grows peak RSS by far less than one
    byte per (q, kv) pair (S^2 = 268 MiB; measured ~8 MiB; the dense rule took +2.7 GiB). Own process: peak RSS is
    per process."""
    out = subprocess.run([sys.executable, "-c", PAPER_MASK_MEMORY], capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["S"] == 64 * (120 + 8) + 63 * 120 + 64 * 16 == 16776 and row["padded"] == 32768
    assert row["growth_kib"] * 1024 < row["S"] ** 2 / 4, row
    assert row["blocks"] > 0
