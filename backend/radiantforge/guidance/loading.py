"""Stable Diffusion for score distillation: loading with diffusers (never downloading) and the guidance wrapper.

A model is named by a local folder or by a Hugging Face id (or a short alias, see
``MODEL_ALIASES``) that must already be in the Hugging Face cache. Either way it must hold the
diffusers Stable Diffusion layout::

    model_index.json
    unet/config.json          unet/diffusion_pytorch_model.safetensors   (or .bin, or .fp16.* variants)
    vae/config.json           vae/diffusion_pytorch_model.safetensors
    text_encoder/config.json  text_encoder/model.safetensors
    tokenizer/                vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
    scheduler/scheduler_config.json

Everything is loaded with ``local_files_only=True``; a missing model raises :class:`InputError`
with the exact command to fetch it. Weights are fp16 on CUDA and fp32 on CPU and MPS.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..devices import resolve_device
from ..errors import InputError, quoted
from .sds import GuidanceModel

MODEL_ALIASES = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21base": "stabilityai/stable-diffusion-2-1-base",
}
DEFAULT_MODEL = "sd15"
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# What to fetch from a Stable Diffusion repository (1.5 and 2.1-base name them alike): the configs, the tokenizer
# and the full-precision safetensors only, not the repository's other weight formats and variants.
DOWNLOAD_FILES = (
    "model_index.json", "scheduler/scheduler_config.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "text_encoder/config.json",
    "text_encoder/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_WEIGHT_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
HALF_PRECISION_VARIANT = "fp16"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(hf_home)).expanduser() / "hub"


def download_instructions(repo_id: str, cache_dir: Path) -> str:
    # Files as positional arguments: both `hf download` and the older `huggingface-cli download` take them.
    files = " ".join(DOWNLOAD_FILES)
    cache_option = "" if cache_dir == hf_hub_cache_dir() else f" --cache-dir {cache_dir}"
    return (f"download it once with\n    hf download {repo_id} {files}{cache_option}\n"
            f"(huggingface_hub's CLI, `pip install huggingface_hub`; older versions name it `huggingface-cli download`), "
            f"which puts it in the Hugging Face cache at {cache_dir} (set HF_HUB_CACHE to use another cache), "
            f"or download into a folder of your own with `--local-dir FOLDER` (instead of the cache) and pass FOLDER "
            f"as the model")


def _layout_text() -> str:
    return ("a diffusers Stable Diffusion folder with model_index.json and the subfolders "
            + ", ".join(f"{name}/" for name in REQUIRED_COMPONENTS))


def check_model_folder(folder: Path, repo_id: str | None = None) -> None:
    """Raise InputError naming what is missing when ``folder`` lacks the Stable Diffusion layout."""
    missing = [f"{name}/" for name in REQUIRED_COMPONENTS if not (folder / name).is_dir()]
    if not (folder / "model_index.json").is_file():
        missing.insert(0, "model_index.json")
    for name in ("unet", "vae", "text_encoder"):
        if f"{name}/" not in missing and _weights_variant(folder / name) is False:
            missing.append(f"{name}/ weights (*.safetensors or *.bin)")
    if missing:
        hint = download_instructions(repo_id, hf_hub_cache_dir()) if repo_id else \
            download_instructions(MODEL_ALIASES[DEFAULT_MODEL], hf_hub_cache_dir())
        raise InputError(f"not a complete Stable Diffusion model, missing: {', '.join(missing)}. Expected "
                         f"{_layout_text()}; {hint}", file=folder, field="model")


def _weights_variant(component_dir: Path) -> str | None | bool:
    """None for full-precision weights, "fp16" when only fp16-variant weights exist, False when none exist."""
    names = {p.name for p in component_dir.iterdir()} if component_dir.is_dir() else set()
    if any(stem + suffix in names for stem in _WEIGHT_STEMS for suffix in _WEIGHT_SUFFIXES):
        return None
    if any(f"{stem}.{HALF_PRECISION_VARIANT}{suffix}" in names for stem in _WEIGHT_STEMS for suffix in _WEIGHT_SUFFIXES):
        return HALF_PRECISION_VARIANT
    # Sharded checkpoints come with an index file.
    if any(name.endswith(".index.json") for name in names):
        return None
    return False


def resolve_model_folder(model: str | os.PathLike = DEFAULT_MODEL, cache_dir: str | os.PathLike | None = None,
                         allowed_roots: Sequence[str | os.PathLike] | None = None) -> Path:
    """The folder holding ``model``: a local folder, or the cached snapshot of a Hugging Face id or alias.

    allowed_roots: when given (the service passes its ``--model-dir`` folders), a folder must be an
        absolute path inside one of them, and an ``org/name`` is only ever a Hugging Face id, never
        a relative folder; None (the command line, Python) takes any folder.
    Never touches the network. Raises InputError with download instructions when the model is absent.
    """
    if allowed_roots is not None:
        return _resolve_confined_model(str(model).strip(), cache_dir, [Path(r) for r in allowed_roots])
    text = str(model).strip()
    if not text:
        raise InputError("no model given; " + download_instructions(MODEL_ALIASES[DEFAULT_MODEL], hf_hub_cache_dir()),
                         field="model")
    path = Path(text).expanduser()
    if path.is_dir():
        check_model_folder(path)
        return path
    repo_id = MODEL_ALIASES.get(text, text)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_hub_cache_dir()
    looks_like_path = text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1 or path.exists()
    if looks_like_path or not _REPO_ID.match(repo_id):
        raise InputError(f"no model folder at {path}. Expected {_layout_text()}, or a Hugging Face id "
                         f"(org/name) or one of {', '.join(MODEL_ALIASES)}; "
                         + download_instructions(MODEL_ALIASES[DEFAULT_MODEL], cache), field="model")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, cache_dir=str(cache), local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
        not_a_folder = "" if text in MODEL_ALIASES else f" (and there is no folder {path.resolve()})"
        raise InputError(f"Stable Diffusion model {quoted(repo_id)} is not in the Hugging Face cache at {cache}{not_a_folder}; "
                         f"models are never downloaded automatically: "
                         + download_instructions(repo_id, cache), field="model") from error
    check_model_folder(folder, repo_id)
    return folder


def _looks_like_hub_id(text: str) -> bool:
    return text in MODEL_ALIASES or (bool(_REPO_ID.match(text)) and not text.startswith((".", "~")))


def _resolve_confined_model(text: str, cache_dir, roots: list[Path]) -> Path:
    """resolve_model_folder for a job from a client: ids from the cache, folders only inside ``roots``.

    A folder outside the roots is refused with the same message whether it exists or not, so a
    client learns nothing about the service's disk.
    """
    if not text or _looks_like_hub_id(text):
        return resolve_model_folder(text or DEFAULT_MODEL, cache_dir)  # never a relative folder: see _looks_like_hub_id
    places = ", ".join(str(r) for r in roots) if roots else "none: the service was started without --model-dir"
    refusal = InputError(f"{quoted(text)} is neither a Hugging Face id (org/name) in the service's cache nor one of "
                         f"{', '.join(MODEL_ALIASES)}; a model folder must be an absolute path inside the service's "
                         f"model folders ({places})", field="model")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise refusal
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        raise refusal from None
    if not any(resolved.is_relative_to(root.expanduser().resolve()) for root in roots):
        raise refusal
    if not resolved.is_dir():
        raise InputError(f"no model folder at {path} (inside the service's model folders)", field="model")
    check_model_folder(resolved)
    return resolved


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (half the memory, tensor cores), fp32 on CPU and MPS (fp16 is slow or fragile there)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def _load_component(loader, folder: Path, name: str):
    variant = _weights_variant(folder / name) or None
    try:
        if variant is None:
            return loader(folder / name)
        return loader(folder / name, variant=variant)
    except (OSError, ValueError, EnvironmentError, KeyError) as error:
        raise InputError(f"could not load the {name} of the Stable Diffusion model: {error}", file=folder / name,
                         field="model") from error


class StableDiffusionGuidance(GuidanceModel):
    """Stable Diffusion (1.5, 2.1-base or any model in the same diffusers layout) as a guidance model.

    predict_noise(latents_noisy (B, 4, h, w), t (B,), text_embeddings (B, L, D)) -> ε̂ (B, 4, h, w) float32;
    v-prediction and sample-prediction models are converted to ε̂.
    text_embeddings(prompts) -> (N, L, D), each prompt encoded once and cached.
    """

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, device, dtype, folder: Path | None = None):
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.device, self.dtype, self.folder = device, dtype, folder
        for module in (unet, vae, text_encoder):
            module.eval().requires_grad_(False)
        self.alphas_cumprod = scheduler.alphas_cumprod.float().to(device)
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise InputError(f"unsupported prediction_type {quoted(self.prediction_type)}", file=folder, field="scheduler")
        self.vae_downsampling = 2 ** (len(vae.config.block_out_channels) - 1)
        self.native_resolution = int(unet.config.sample_size) * self.vae_downsampling
        self._embedding_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N, L, D) embeddings (last hidden state of the text encoder) in the model dtype; cached per prompt."""
        if isinstance(prompts, str):
            prompts = [prompts]
        new = [p for p in dict.fromkeys(prompts) if p not in self._embedding_cache]
        if new:
            tokens = self.tokenizer(new, padding="max_length", max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt")
            hidden = self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)
            for prompt, embedding in zip(new, hidden):
                self._embedding_cache[prompt] = embedding
        return torch.stack([self._embedding_cache[p] for p in prompts])

    def prompt_embeddings(self, prompt: str, negative_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(cond (1, L, D), uncond (1, L, D)); uncond is the negative prompt, or the empty prompt."""
        if not prompt or not prompt.strip():
            raise InputError("the prompt is empty", field="prompt")
        embeddings = self.text_embeddings([prompt, negative_prompt])
        return embeddings[:1], embeddings[1:]

    @torch.no_grad()
    def predict_noise(self, latents_noisy: torch.Tensor, t: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        output = self.unet(latents_noisy.to(self.dtype), t.to(self.device),
                           encoder_hidden_states=conditioning.to(self.dtype)).sample.float()
        if self.prediction_type == "epsilon":
            return output
        alphas_cumprod = self.alphas_cumprod[t.to(self.device)].view(-1, 1, 1, 1)
        alpha, sigma = alphas_cumprod.sqrt(), (1.0 - alphas_cumprod).sqrt()
        if self.prediction_type == "v_prediction":
            # v = α·ε − σ·x_0 and x_t = α·x_0 + σ·ε  ⇒  ε = α·v + σ·x_t
            return alpha * output + sigma * latents_noisy.float()
        return (latents_noisy.float() - alpha * output) / sigma  # predicts x_0


def load_stable_diffusion(model: str | os.PathLike = DEFAULT_MODEL, device="auto", dtype: torch.dtype | None = None,
                          cache_dir: str | os.PathLike | None = None) -> StableDiffusionGuidance:
    """Load a Stable Diffusion model for guidance from a folder or the Hugging Face cache (never downloads).

    model: a folder, a Hugging Face id ("stable-diffusion-v1-5/stable-diffusion-v1-5") or an alias
    ("sd15", "sd21base"). dtype: default fp16 on CUDA, fp32 elsewhere.
    """
    folder = resolve_model_folder(model, cache_dir)
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    def local(cls, **options):
        return lambda path, **kw: cls.from_pretrained(path, local_files_only=True, **options, **kw)

    unet = _load_component(local(UNet2DConditionModel, torch_dtype=dtype), folder, "unet")
    vae = _load_component(local(AutoencoderKL, torch_dtype=dtype), folder, "vae")
    # transformers renamed torch_dtype to dtype (v4.56): cast after loading instead, which both versions accept.
    text_encoder = _load_component(local(CLIPTextModel), folder, "text_encoder")
    tokenizer = _load_component(local(CLIPTokenizer), folder, "tokenizer")
    # Only ᾱ_t and the prediction type are needed: any SD scheduler config (PNDM, DDIM ...) reads as DDPM.
    scheduler = _load_component(local(DDPMScheduler), folder, "scheduler")
    unet.to(device)
    vae.to(device)
    text_encoder.to(device=device, dtype=dtype)
    return StableDiffusionGuidance(unet, vae, text_encoder, tokenizer, scheduler, device, dtype, folder)
