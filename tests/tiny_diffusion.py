"""Build a tiny random Stable Diffusion in the real diffusers folder layout, for tests (no downloads).

The folder is written by ``StableDiffusionPipeline.save_pretrained`` from a tiny
``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``, a CLIP BPE tokenizer whose
vocab.json and merges.txt are written here, and a DDIM scheduler with Stable Diffusion's noise
schedule, so loading it exercises exactly the code path a real model goes through.

Sizes: latents 4×8×8, VAE downsampling 2 (so the native resolution is 16 px), text embeddings 16×32.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

TEXT_HIDDEN_SIZE = 32
TEXT_MAX_LENGTH = 16
LATENT_SIZE = 8
LATENT_CHANNELS = 4
FAKE_COMMIT_HASH = "0123456789abcdef0123456789abcdef01234567"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Merges so that real BPE happens on the words the tests use (the rest falls back to single bytes).
TINY_MERGES = [("t", "e"), ("e", "a"), ("r", "e"), ("v", "i"), ("vi", "e"), ("vie", "w</w>"), ("s", "i"),
               ("d", "e</w>"), ("si", "de</w>"), ("f", "r"), ("fr", "o"), ("n", "t</w>"), ("fro", "nt</w>")]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (printable bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def write_tiny_clip_tokenizer_files(folder: Path) -> Path:
    """vocab.json + merges.txt of a byte-level CLIP BPE with every byte (plain and word-final) and a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in TINY_MERGES] + [BOS, EOS]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in TINY_MERGES) + "\n"
    (folder / "merges.txt").write_text(merges, encoding="utf-8")
    return folder


@dataclass
class TinyStableDiffusion:
    folder: Path
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object


def build_tiny_stable_diffusion(folder: Path, seed: int = 0, prediction_type: str = "epsilon") -> TinyStableDiffusion:
    """Random tiny SD components, saved to ``folder`` in the diffusers layout; returns them (in memory) too."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_HIDDEN_SIZE, attention_head_dim=4,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=LATENT_SIZE * 2,
    )
    tokenizer_dir = write_tiny_clip_tokenizer_files(folder.parent / f"{folder.name}_tokenizer_source")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=TEXT_MAX_LENGTH)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN_SIZE, intermediate_size=2 * TEXT_HIDDEN_SIZE,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=TEXT_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    # Stable Diffusion's training schedule, as its scheduler_config.json states it.
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, prediction_type=prediction_type)
    for module in (unet, vae, text_encoder):
        module.eval()
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    # Real SD repositories ship the tokenizer as vocab.json + merges.txt (no tokenizer.json): do the same,
    # so loading builds the tokenizer from the BPE files as it does for a real model.
    (folder / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizer_dir / name, folder / "tokenizer" / name)
    shutil.rmtree(tokenizer_dir)
    return TinyStableDiffusion(folder, unet, vae, text_encoder, tokenizer, scheduler)


def install_in_fake_hf_cache(model_folder: Path, cache_dir: Path, repo_id: str) -> Path:
    """Copy a model folder into the Hugging Face cache layout ``models--org--name/snapshots/<hash>/`` + refs/main."""
    repo_folder = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_folder / "snapshots" / FAKE_COMMIT_HASH
    shutil.copytree(model_folder, snapshot)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / "main").write_text(FAKE_COMMIT_HASH)
    return snapshot
