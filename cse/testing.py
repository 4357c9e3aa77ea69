"""Tiny random Stable-Diffusion-like stacks built from config: the same diffusers classes as SD2,
small enough for CPU tests, written as real pipeline folders. Nothing is downloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from cse.priors.diffusers_prior import save_pipeline_folder, sd_scheduler


def tiny_unet(in_channels: int, sample_size: int, cross_attention_dim: int = 32) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_vae() -> AutoencoderKL:
    """Two levels: images are twice the latents' side."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
    )


def _byte_level_tokenizer(path: Path, max_length: int = 16) -> None:
    """A CLIP BPE tokenizer with a byte-level vocabulary and no merges (real format, no download)."""
    # GPT-2/CLIP byte-level alphabet: printable bytes stand for themselves, the rest map to 256+
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    (path / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": max_length, "tokenizer_class": "CLIPTokenizer"})
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
            }
        )
    )


def _tiny_text_encoder(path: Path, vocab_size: int, hidden_size: int = 32) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    CLIPTextModel(config).save_pretrained(path)


def build_tiny_stack(
    path: str | os.PathLike,
    latent: bool = True,
    prediction_type: str = "epsilon",
    text_encoder: bool = True,
    image_size: int = 16,
    seed: int = 0,
) -> Path:
    """Write a tiny random prior folder: latent (VAE, images ``image_size``) or pixel space."""
    torch.manual_seed(seed)
    path = Path(path)
    vae = tiny_vae() if latent else None
    unet = tiny_unet(4 if latent else 3, image_size // 2 if latent else image_size)
    save_pipeline_folder(path, unet, sd_scheduler(prediction_type), vae)
    if text_encoder:
        _byte_level_tokenizer(path / "tokenizer")
        vocab_size = len(json.loads((path / "tokenizer" / "vocab.json").read_text()))
        _tiny_text_encoder(path / "text_encoder", vocab_size)
        index = json.loads((path / "model_index.json").read_text())
        index |= {"tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"]}
        (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path
