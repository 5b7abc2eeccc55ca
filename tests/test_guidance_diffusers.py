"""The real diffusers path with a tiny random Stable Diffusion (tests/tiny_diffusion.py), never downloading.

The tiny model is saved with ``save_pretrained`` in the Stable Diffusion folder layout and loaded
back through :func:`load_stable_diffusion`, the function users call, from a folder and from a fake
Hugging Face cache. Its outputs are compared with the in-memory modules it was saved from.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from radiantforge.errors import InputError
from radiantforge.guidance import (
    MODEL_ALIASES,
    SDSConfig,
    ViewDependentPrompts,
    default_dtype,
    load_stable_diffusion,
    scaled_linear_alphas_cumprod,
    sds_loss,
    sds_loss_on_latents,
)
from tiny_diffusion import (FAKE_COMMIT_HASH, LATENT_CHANNELS, LATENT_SIZE, build_tiny_stable_diffusion,
                            install_in_fake_hf_cache)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
PROMPT = "a red teapot, front view"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd") / "model")


@pytest.fixture(scope="module")
def guidance(tiny):
    return load_stable_diffusion(tiny.folder, device="cpu")


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here may reach the network
    return cache


def test_loads_the_folder_in_fp32_on_cpu_with_the_schedulers_alphas(guidance, tiny):
    assert guidance.dtype == torch.float32 and guidance.device.type == "cpu"
    assert next(guidance.unet.parameters()).dtype == torch.float32
    assert next(guidance.text_encoder.parameters()).dtype == torch.float32
    assert guidance.native_resolution == LATENT_SIZE * 2  # unet sample size × VAE downsampling
    assert guidance.prediction_type == "epsilon"
    assert torch.allclose(guidance.alphas_cumprod, tiny.scheduler.alphas_cumprod.float())
    # The oracle uses SD's schedule; diffusers' scheduler is the reference for it.
    assert torch.allclose(scaled_linear_alphas_cumprod(), tiny.scheduler.alphas_cumprod.float(), atol=1e-6)
    assert default_dtype(torch.device("cuda")) == torch.float16
    assert default_dtype(torch.device("mps")) == torch.float32


def test_text_embeddings_match_the_text_encoder_and_are_computed_once(guidance, tiny):
    tokens = tiny.tokenizer([PROMPT, ""], padding="max_length", max_length=tiny.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = tiny.text_encoder(tokens.input_ids)[0]
    calls = []
    hook = guidance.text_encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        embeddings = guidance.text_embeddings([PROMPT, ""])
        again = guidance.text_embeddings([PROMPT])
        cond, negative = guidance.prompt_embeddings(PROMPT, negative_prompt="blurry, low quality")
    finally:
        hook.remove()
    assert embeddings.shape == expected.shape == (2, tiny.tokenizer.model_max_length, 32)
    assert torch.allclose(embeddings, expected, atol=1e-5)
    assert not torch.allclose(embeddings[0], embeddings[1])
    assert torch.equal(again[0], embeddings[0]) and torch.equal(cond[0], embeddings[0])
    assert calls == [2, 1]  # the two prompts once, then only the new negative prompt
    assert torch.equal(negative[0], guidance.text_embeddings(["blurry, low quality"])[0])
    with pytest.raises(InputError, match="prompt"):
        guidance.prompt_embeddings("  ")


def test_noise_prediction_is_the_unets(guidance, tiny):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE, generator=generator)
    t = torch.tensor([100, 700])
    embeddings = guidance.text_embeddings([PROMPT, "a blue cube"])
    with torch.no_grad():
        expected = tiny.unet(latents, t, encoder_hidden_states=embeddings).sample
    assert torch.allclose(guidance.predict_noise(latents, t, embeddings), expected, atol=1e-5)


def test_sds_step_applies_cfg_and_w_t_exactly(guidance, tiny):
    """d loss / d latents from separate UNet calls per branch: (1 − ᾱ_t)·(ε̂_∅ + s(ε̂_c − ε̂_∅) − ε) / B."""
    batch, scale = 2, 7.5
    cond, uncond = guidance.prompt_embeddings(PROMPT, negative_prompt="blurry")
    latents = torch.randn(batch, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE,
                          generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    output = sds_loss_on_latents(guidance, latents, cond, uncond, SDSConfig(guidance_scale=scale),
                                 generator=torch.Generator().manual_seed(2))
    output.loss.backward()

    alphas_cumprod = tiny.scheduler.alphas_cumprod[output.timesteps].view(-1, 1, 1, 1).float()
    noisy = alphas_cumprod.sqrt() * latents.detach() + (1 - alphas_cumprod).sqrt() * output.noise
    with torch.no_grad():
        eps_uncond = tiny.unet(noisy, output.timesteps, encoder_hidden_states=uncond.expand(batch, -1, -1)).sample
        eps_cond = tiny.unet(noisy, output.timesteps, encoder_hidden_states=cond.expand(batch, -1, -1)).sample
    expected = (1 - alphas_cumprod) * (eps_uncond + scale * (eps_cond - eps_uncond) - output.noise)
    assert torch.allclose(latents.grad * batch, expected, atol=1e-4)
    assert (output.timesteps >= 20).all() and (output.timesteps <= 980).all()


@pytest.mark.parametrize("space, mode", [("latent", "sds"), ("pixel", "sds"), ("latent", "csd"), ("pixel", "csd")])
def test_gradients_reach_the_rendered_image(guidance, space, mode):
    # 24 px renders are resized to the model's 16 px, through the real tiny VAE.
    image = torch.rand(2, 24, 24, 3, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    cond, uncond = guidance.prompt_embeddings(PROMPT)
    output = sds_loss(guidance, image, cond, uncond, SDSConfig(space=space, mode=mode),
                      generator=torch.Generator().manual_seed(4))
    output.loss.backward()
    assert torch.isfinite(image.grad).all()
    assert (image.grad.abs() > 0).float().mean() > 0.9
    expected_shape = (2, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE) if space == "latent" else (2, 3, 16, 16)
    assert output.grad.shape == expected_shape
    assert output.predicted_latents.shape == (2, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)


def test_view_dependent_prompts_with_the_real_text_encoder(guidance):
    prompts = ViewDependentPrompts(guidance.text_embeddings, "a red teapot")
    front, side = guidance.text_embeddings(["a red teapot, front view", "a red teapot, side view"])
    cond, uncond = prompts.embeddings(torch.tensor([45.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert torch.allclose(cond[0], 0.5 * front + 0.5 * side, atol=1e-6)
    assert torch.equal(cond[1], front)
    assert torch.equal(uncond[0], guidance.text_embeddings([""])[0])


def test_v_prediction_models_are_converted_to_noise(tiny, tmp_path):
    folder = tmp_path / "v_model"
    shutil.copytree(tiny.folder, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["prediction_type"] = "v_prediction"
    config_path.write_text(json.dumps(config))
    guidance = load_stable_diffusion(folder, device="cpu")
    latents = torch.randn(1, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([600])
    embeddings = guidance.text_embeddings([PROMPT])
    with torch.no_grad():
        velocity = tiny.unet(latents, t, encoder_hidden_states=embeddings).sample
    alphas_cumprod = tiny.scheduler.alphas_cumprod[t].float()
    expected = alphas_cumprod.sqrt() * velocity + (1 - alphas_cumprod).sqrt() * latents  # ε = α·v + σ·x_t
    assert torch.allclose(guidance.predict_noise(latents, t, embeddings), expected, atol=1e-5)


def test_loads_an_id_or_alias_from_the_hugging_face_cache(tiny, guidance, empty_hf_cache):
    snapshot = install_in_fake_hf_cache(tiny.folder, empty_hf_cache, MODEL_ALIASES["sd15"])
    assert snapshot.parent.parent.name == "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    for name in ("sd15", MODEL_ALIASES["sd15"]):
        from_cache = load_stable_diffusion(name, device="cpu")
        assert from_cache.folder.resolve() == snapshot.resolve()
        assert from_cache.folder.name == FAKE_COMMIT_HASH
    assert torch.allclose(from_cache.text_embeddings([PROMPT]), guidance.text_embeddings([PROMPT]))


def test_a_missing_model_says_what_to_download_and_where(tiny, empty_hf_cache, tmp_path):
    with pytest.raises(InputError) as missing:
        load_stable_diffusion("sd15", device="cpu")
    message = str(missing.value)
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert str(empty_hf_cache) in message and "unet/diffusion_pytorch_model.safetensors" in message
    assert "--local-dir" in message and message.startswith("model:")

    with pytest.raises(InputError, match="stabilityai/stable-diffusion-2-1-base"):
        load_stable_diffusion("sd21base", device="cpu")

    with pytest.raises(InputError, match="no model folder at .*model_index.json"):
        load_stable_diffusion(str(tmp_path / "nowhere" / "sd"), device="cpu")

    incomplete = tmp_path / "incomplete"
    shutil.copytree(tiny.folder, incomplete)
    shutil.rmtree(incomplete / "unet")
    (incomplete / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(InputError, match=r"missing: unet/, vae/ weights") as partial:
        load_stable_diffusion(incomplete, device="cpu")
    assert str(incomplete) in str(partial.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda(tiny):
    guidance = load_stable_diffusion(tiny.folder, device="cuda")
    assert guidance.dtype == torch.float16 and next(guidance.unet.parameters()).dtype == torch.float16
    image = torch.rand(2, 24, 24, 3, device="cuda", requires_grad=True)
    cond, uncond = guidance.prompt_embeddings(PROMPT)
    for space in ("latent", "pixel"):
        image.grad = None
        sds_loss(guidance, image, cond, uncond, SDSConfig(space=space)).loss.backward()
        assert image.grad.dtype == torch.float32 and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
