"""Instruction embeddings: tiny random umT5 + a tokenizer built here (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from memorywam_ros.runtime.instructions import (
    InstructionStore,
    encode_instructions,
    encoder_identity,
    main,
    random_instruction_embeddings,
)

WORDS = ["pick", "up", "the", "red", "blue", "cube", "and", "put", "it", "in", "box", "stack", "cups", "open",
         "drawer"]  # fmt: skip
MAXLEN = 16


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # T5-style: append </s> to every sequence
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", padding_side="right"
    )


def make_encoder(seed: int = 0, d_model: int = 32) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    cfg = UMT5Config(
        vocab_size=len(WORDS) + 3, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return UMT5EncoderModel(cfg).eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture(scope="module")
def encoder() -> UMT5EncoderModel:
    return make_encoder()


def test_padding_is_zeroed_and_tokens_are_not(encoder, tokenizer) -> None:
    texts = ["pick up the red cube", "open drawer"]
    emb = encode_instructions(texts, encoder, tokenizer, max_length=MAXLEN)
    assert emb.shape == (2, MAXLEN, 32) and emb.dtype == torch.float32
    # 5 words + </s> = 6 real tokens; 2 words + </s> = 3
    assert (emb[0, :6].abs().sum(-1) > 0).all() and (emb[0, 6:] == 0).all()
    assert (emb[1, :3].abs().sum(-1) > 0).all() and (emb[1, 3:] == 0).all()
    # batching and padding do not change a text's embedding
    alone = encode_instructions(texts[1:], encoder, tokenizer, max_length=MAXLEN)
    torch.testing.assert_close(alone[0], emb[1], atol=1e-5, rtol=0)


def test_store_roundtrip_cache_hit_and_unknown(tmp_path: Path, encoder, tokenizer) -> None:
    store = InstructionStore(tmp_path / "instructions")
    assert store.encode_missing(["pick up the red cube", " open drawer "], encoder, tokenizer, MAXLEN) == [
        "pick up the red cube",
        "open drawer",
    ]
    calls = []
    hook = encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        again = store.encode_missing(["open drawer", "stack cups"], encoder, tokenizer, MAXLEN)
    finally:
        hook.remove()
    assert again == ["stack cups"] and len(calls) == 1  # only the new text went through the encoder

    reopened = InstructionStore(tmp_path / "instructions")  # what the Policy does
    assert reopened.texts() == ["open drawer", "pick up the red cube", "stack cups"]
    assert "open drawer" in reopened and "fly away" not in reopened
    ref = encode_instructions(["open drawer"], encoder, tokenizer, MAXLEN)[0]
    torch.testing.assert_close(reopened.get("open drawer  "), ref, atol=0, rtol=0)
    with pytest.raises(KeyError, match=r"unknown instruction 'fly away'.*knows 3.*open drawer"):
        reopened.get("fly away")


def test_identity_keys_encoder_and_length(tmp_path: Path, tokenizer) -> None:
    a, b = make_encoder(seed=0), make_encoder(seed=1)
    assert encoder_identity(a, tokenizer, MAXLEN) == encoder_identity(make_encoder(seed=0), tokenizer, MAXLEN)
    assert encoder_identity(a, tokenizer, MAXLEN) != encoder_identity(b, tokenizer, MAXLEN)
    assert encoder_identity(a, tokenizer, MAXLEN) != encoder_identity(a, tokenizer, 2 * MAXLEN)
    assert encoder_identity(a, tokenizer) != encoder_identity(make_encoder(d_model=48), tokenizer)
    a_bf16 = make_encoder(seed=0).to(torch.bfloat16)
    assert encoder_identity(a_bf16, tokenizer, MAXLEN) == encoder_identity(a, tokenizer, MAXLEN)

    store = InstructionStore(tmp_path)
    store.encode_missing(["open drawer"], a, tokenizer, MAXLEN)
    assert store.encode_missing(["open drawer"], b, tokenizer, MAXLEN) == ["open drawer"]  # not served from a
    assert len(store.encoder_ids) == 2
    with pytest.raises(KeyError, match="holds 2 encoders"):
        store.get("open drawer")
    ea = store.get("open drawer", encoder_id=encoder_identity(a, tokenizer, MAXLEN))
    eb = store.get("open drawer", encoder_id=encoder_identity(b, tokenizer, MAXLEN))
    assert not torch.equal(ea, eb)


def test_cli_end_to_end(tmp_path: Path, encoder, tokenizer, capsys) -> None:
    enc_dir, tok_dir, ckpt = tmp_path / "umt5", tmp_path / "tok", tmp_path / "ckpt"
    encoder.save_pretrained(enc_dir)
    tokenizer.save_pretrained(tok_dir)
    listing = tmp_path / "instructions.txt"
    listing.write_text("# comment\nstack cups\n\nput it in box\n", encoding="utf-8")
    argv = ["--encoder", str(enc_dir), "--tokenizer", str(tok_dir), "--out", str(ckpt),
            "--max-length", str(MAXLEN), "--device", "cpu",
            "pick up the red cube", "--file", str(listing)]  # fmt: skip
    assert main(argv) == 0
    assert "encoded 3 new, 0 cached" in capsys.readouterr().err
    assert main(argv) == 0
    assert "encoded 0 new, 3 cached" in capsys.readouterr().err

    index = json.loads((ckpt / "instructions" / "index.json").read_text())
    assert index["format_version"] == 1 and len(index["entries"]) == 3
    store = InstructionStore(ckpt / "instructions")
    loaded = UMT5EncoderModel.from_pretrained(enc_dir).eval()
    ref = encode_instructions(["put it in box"], loaded, tokenizer, MAXLEN)[0]
    torch.testing.assert_close(store.get("put it in box"), ref, atol=0, rtol=0)
    assert store.encoder_ids == [encoder_identity(encoder, tokenizer, MAXLEN)]  # path-independent id


def test_random_embeddings_deterministic_and_storable(tmp_path: Path) -> None:
    e1 = random_instruction_embeddings(["open drawer", "stack the cups"], dim=24, length=10, seed=3)
    e2 = random_instruction_embeddings(["stack the cups"], dim=24, length=10, seed=3)
    assert e1.shape == (2, 10, 24)
    torch.testing.assert_close(e1[1], e2[0], atol=0, rtol=0)  # per text, not per position in the list
    assert (e1[0, 3:] == 0).all() and (e1[0, :3] != 0).all()  # 2 words + end token, zero padding
    assert not torch.equal(e1, random_instruction_embeddings(["open drawer", "stack the cups"], 24, 10, 4))
    store = InstructionStore(tmp_path)
    store.put(["open drawer", "stack the cups"], e1, encoder_id="random-seed3", encoder_info={"name": "rnd"})
    torch.testing.assert_close(InstructionStore(tmp_path).get("stack the cups"), e1[1], atol=0, rtol=0)
    with pytest.raises(ValueError, match="embeddings must be"):
        store.put(["x"], e1, encoder_id="random-seed3")
