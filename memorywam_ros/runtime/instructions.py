"""umT5 instruction embeddings, computed once offline and read from disk by the robot.

The robot never loads the 5.7 B-parameter umT5 encoder: `memorywam-encode-instructions` runs it
on a workstation and writes the embeddings into `CHECKPOINT_DIR/instructions/`; the Policy reads
them through `InstructionStore.get(text)`.

Convention (Wan / FastWAM, pitfall 13): each instruction is tokenised to exactly `max_length`
tokens (128 here, Wan uses 512), encoded with the attention mask, and the encoder output at padding
positions is set to zero. The DiT then attends to all `max_length` context tokens without a mask,
so the zero padding is visible to it, exactly as in Wan's pretraining.

Store layout::

    DIR/index.json                      {"format_version", "encoders": {id: info}, "entries": [...]}
    DIR/<enc16>-<text16>.safetensors    {"embedding": float32 (max_length, d)}

Entries are keyed by (encoder identity, text). The identity is a sha256 over the encoder's
architecture config, a fingerprint of its weights, the tokenizer's vocabulary and `max_length`
(see `encoder_identity`), so embeddings from another text encoder are never served by mistake
and a re-run with the same encoder only encodes texts it has not seen. Texts are keyed after
`str.strip()`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..model.weights import read_json, read_safetensors

__all__ = [
    "InstructionStore",
    "UnknownInstructionError",
    "encode_instructions",
    "encoder_identity",
    "main",
    "random_instruction_embeddings",
]

FORMAT_VERSION = 1
DEFAULT_MAX_LENGTH = 128
INDEX_NAME = "index.json"
# config keys that name where/how a model was loaded, not what it computes
_VOLATILE_CONFIG_KEYS = {"transformers_version", "torch_dtype", "dtype", "architectures", "use_cache"}
_TOKENIZER_PROBE = "Pick up the red cube and put it in the box. 把杯子放到盘子上。"


class UnknownInstructionError(KeyError):
    """KeyError whose message prints as written (plain KeyError repr-quotes its message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encoder_identity(encoder: torch.nn.Module, tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """sha256 hex id of (encoder architecture, weight fingerprint, tokenizer vocabulary, max_length).

    The weight fingerprint hashes the first 4096 values of the first and last parameter tensors:
    cheap for an 11 GB encoder, yet distinguishes two checkpoints (or two random inits) of the
    same architecture. The load path and the load dtype are excluded, so the same model in another
    folder, or in bf16 on a GPU instead of fp32 on a CPU, keeps its id.
    """
    cfg = encoder.config.to_dict() if hasattr(encoder, "config") else {}
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
    h = hashlib.sha256()
    h.update(type(encoder).__name__.encode())
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    params = list(encoder.parameters())
    for p in (params[0], params[-1]) if params else ():
        h.update(str(tuple(p.shape)).encode())
        # hashed at bfloat16 precision so the same checkpoint loaded in fp32 or bf16 keeps one id
        h.update(p.detach().reshape(-1)[:4096].to(torch.bfloat16).float().cpu().numpy().tobytes())
    h.update(type(tokenizer).__name__.encode())
    h.update(str(len(tokenizer)).encode())
    h.update(json.dumps(tokenizer(_TOKENIZER_PROBE)["input_ids"]).encode())
    h.update(f"max_length={max_length}".encode())
    return h.hexdigest()


@torch.no_grad()
def encode_instructions(
    texts: Sequence[str],
    encoder: torch.nn.Module,
    tokenizer: Any,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 8,
) -> torch.Tensor:
    """Encode texts with a umT5 encoder -> float32 (N, max_length, d), padding positions zeroed."""
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not a single string")
    param = next(encoder.parameters())
    outs: list[torch.Tensor] = []
    for start in range(0, len(texts), batch_size):
        batch = [t.strip() for t in texts[start : start + batch_size]]
        tok = tokenizer(
            batch,
            padding="max_length",
            max_length=max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids = tok["input_ids"].to(param.device)  # (B, L)
        mask = tok["attention_mask"].to(param.device)  # (B, L) 1 = real token
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, d)
        outs.append((hidden.float() * mask[..., None].float()).cpu())
    if not outs:
        raise ValueError("no texts to encode")
    return torch.cat(outs, dim=0)


def random_instruction_embeddings(
    texts: Sequence[str], dim: int, length: int = DEFAULT_MAX_LENGTH, seed: int = 0
) -> torch.Tensor:
    """Stand-in embeddings for tiny random checkpoints and tests -> float32 (N, length, dim).

    NOT a text encoder: each text gets unit-normal vectors drawn from a generator seeded by
    (seed, text), so the same text always gets the same embedding, with the real layout
    (one token per word plus an end token, then zero padding).
    """
    out = torch.zeros(len(texts), length, dim)
    for i, text in enumerate(texts):
        text = text.strip()
        gen = torch.Generator().manual_seed(int(_sha256(f"{seed}:{text}")[:15], 16))
        n = max(1, min(length, len(text.split()) + 1))
        out[i, :n] = torch.randn(n, dim, generator=gen)
    return out


class InstructionStore:
    """Directory of instruction embeddings keyed by (encoder identity, stripped text)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._encoders: dict[str, dict[str, Any]] = {}
        self._entries: dict[tuple[str, str], dict[str, Any]] = {}
        index = self.directory / INDEX_NAME
        if index.is_file():
            data = read_json(index, "instruction index")
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"{index}: unsupported instruction store format {data.get('format_version')!r}"
                )
            self._encoders = dict(data.get("encoders", {}))
            for e in data.get("entries", []):
                self._entries[(e["encoder"], e["text"])] = e

    # ------------------------------------------------------------------ queries
    @property
    def encoder_ids(self) -> list[str]:
        return sorted(self._encoders)

    def encoder_info(self, encoder_id: str) -> dict[str, Any]:
        return dict(self._encoders[encoder_id])

    def texts(self, encoder_id: str | None = None) -> list[str]:
        """Known instructions (for one encoder id, or for all)."""
        return sorted({t for (e, t) in self._entries if encoder_id is None or e == encoder_id})

    def __len__(self) -> int:
        return len(self._entries)

    def contains(self, text: str, encoder_id: str | None = None) -> bool:
        try:
            return (self._resolve_encoder(encoder_id), text.strip()) in self._entries
        except KeyError:
            return False

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.contains(text)

    def _resolve_encoder(self, encoder_id: str | None) -> str:
        if encoder_id is not None:
            if encoder_id not in self._encoders:
                raise UnknownInstructionError(
                    f"instruction store {self.directory} has no encoder {encoder_id[:16]}…"
                )
            return encoder_id
        if len(self._encoders) == 1:
            return next(iter(self._encoders))
        if not self._encoders:
            raise UnknownInstructionError(f"instruction store {self.directory} is empty (no {INDEX_NAME})")
        raise UnknownInstructionError(
            f"instruction store {self.directory} holds {len(self._encoders)} encoders; pass encoder_id, "
            f"one of {[e[:16] for e in self.encoder_ids]}"
        )

    def get(self, text: str, encoder_id: str | None = None) -> torch.Tensor:
        """float32 (max_length, d) embedding of `text`; KeyError listing the known texts if absent.

        `encoder_id` may be omitted when the store holds one encoder (the usual checkpoint).
        """
        eid = self._resolve_encoder(encoder_id)
        entry = self._entries.get((eid, text.strip()))
        if entry is None:
            known = self.texts(eid)
            raise UnknownInstructionError(
                f"unknown instruction {text.strip()!r}; this checkpoint knows {len(known)}: {known}. "
                f"Add it with: memorywam-encode-instructions --encoder UMT5_DIR --out CHECKPOINT_DIR "
                f"{json.dumps(text.strip(), ensure_ascii=False)}"
            )
        return read_safetensors(self.directory / entry["file"])["embedding"]

    # ------------------------------------------------------------------ writes
    def put(
        self,
        texts: Sequence[str],
        embeddings: torch.Tensor,
        encoder_id: str,
        encoder_info: dict[str, Any] | None = None,
    ) -> None:
        """Store (N, L, d) embeddings for N texts under `encoder_id` and rewrite the index."""
        if embeddings.ndim != 3 or embeddings.shape[0] != len(texts):
            raise ValueError(
                f"embeddings must be (N={len(texts)}, L, d), got {tuple(embeddings.shape)}"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        info = dict(encoder_info or {})
        info.update(length=int(embeddings.shape[1]), dim=int(embeddings.shape[2]))
        known = self._encoders.get(encoder_id)
        if known is not None and (known["length"], known["dim"]) != (info["length"], info["dim"]):
            raise ValueError(f"encoder {encoder_id[:16]}… already stores {known['length']}x{known['dim']}")
        self._encoders.setdefault(encoder_id, info)
        for text, emb in zip(texts, embeddings):
            text = text.strip()
            name = f"{encoder_id[:16]}-{_sha256(text)[:16]}.safetensors"
            save_file(
                {"embedding": emb.detach().to("cpu", torch.float32).contiguous()},
                str(self.directory / name),
                metadata={"text": text, "encoder": encoder_id},
            )
            self._entries[(encoder_id, text)] = {
                "encoder": encoder_id,
                "text": text,
                "file": name,
                "num_tokens": int((emb.abs().sum(-1) > 0).sum()),
            }
        self._write_index()

    def _write_index(self) -> None:
        data = {
            "format_version": FORMAT_VERSION,
            "encoders": self._encoders,
            "entries": sorted(self._entries.values(), key=lambda e: (e["encoder"], e["text"])),
        }
        tmp = self.directory / (INDEX_NAME + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.directory / INDEX_NAME)  # atomic: a reader never sees half an index

    def encode_missing(
        self,
        texts: Iterable[str],
        encoder: torch.nn.Module,
        tokenizer: Any,
        max_length: int = DEFAULT_MAX_LENGTH,
        name: str = "",
    ) -> list[str]:
        """Encode and store the texts this encoder has not stored yet; returns those texts."""
        eid = encoder_identity(encoder, tokenizer, max_length)
        wanted = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
        missing = [t for t in wanted if (eid, t) not in self._entries]
        if missing:
            emb = encode_instructions(missing, encoder, tokenizer, max_length=max_length)
            info = {"name": name, "class": type(encoder).__name__, "max_length": max_length}
            self.put(missing, emb, eid, info)
        return missing


# ---------------------------------------------------------------------- CLI
def _resolve_dirs(encoder: str, tokenizer: str | None) -> tuple[str, str]:
    """Accept a umT5 folder, or a diffusers Wan pipeline folder holding text_encoder/ and tokenizer/."""
    enc = Path(encoder)
    if (enc / "text_encoder" / "config.json").is_file():
        tok_default = enc / "tokenizer" if (enc / "tokenizer").is_dir() else enc
        enc = enc / "text_encoder"
    else:
        tok_default = enc
    return str(enc), str(tokenizer or tok_default)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="memorywam-encode-instructions",
        description="Encode instructions with umT5 into CHECKPOINT_DIR/instructions/ "
        "(the robot only reads them).",
    )
    parser.add_argument("texts", nargs="*", help="instructions to encode")
    parser.add_argument("--encoder", required=True, help="umT5 encoder folder (or a Wan diffusers folder)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the encoder's)")
    parser.add_argument("--out", required=True, help="checkpoint directory; writes OUT/instructions/")
    parser.add_argument("--file", default=None, help="text file, one instruction per line")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="encoder dtype (default: bfloat16 on CUDA, float32 on CPU)")
    args = parser.parse_args(argv)

    texts = list(args.texts)
    if args.file:
        lines = Path(args.file).read_text(encoding="utf-8").splitlines()
        texts += [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not texts:
        parser.error("no instructions given (positional texts or --file)")

    import transformers
    from transformers import AutoTokenizer, UMT5EncoderModel

    enc_dir, tok_dir = _resolve_dirs(args.encoder, args.tokenizer)
    dtype_name = args.dtype or ("bfloat16" if str(args.device).startswith("cuda") else "float32")
    # transformers renamed `torch_dtype` to `dtype` in 4.56; loading in the target dtype directly
    # keeps the 5.7 B-param umT5-xxl from materialising in float32 first
    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    encoder = UMT5EncoderModel.from_pretrained(enc_dir, **{dtype_kw: getattr(torch, dtype_name)})
    encoder = encoder.to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)

    eid = encoder_identity(encoder, tokenizer, args.max_length)
    manifest = Path(args.out) / "memorywam.json"
    if manifest.is_file():
        trained_with = json.loads(manifest.read_text()).get("instruction_encoder")
        if trained_with not in (None, eid):
            # the model only understands embeddings of the encoder it was trained with
            parser.error(
                f"{args.out} was trained with instruction encoder {trained_with[:16]}…, "
                f"but {enc_dir} is {eid[:16]}…; use the same umT5 (and tokenizer, max length) as training"
            )
    store = InstructionStore(Path(args.out) / "instructions")
    new = store.encode_missing(texts, encoder, tokenizer, args.max_length, name=Path(enc_dir).name)
    cached = len({t.strip() for t in texts if t.strip()}) - len(new)
    print(
        f"encoder {eid[:16]}: encoded {len(new)} new, {cached} cached; "
        f"store {store.directory} now knows {len(store.texts(eid))} instruction(s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
