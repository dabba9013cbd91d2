"""The tiny world's learned autoencoder (apps/autoencoder_training.h) against diffusers: `iomm train` with
configs/world/autoencoder.toml exports a folder that diffusers' AutoencoderKL loads as it is, reconstructs the held-out
images to the PSNR iomm recorded, and whose latents, scaled and shifted by the config's measured factors, have mean 0
and standard deviation 1 on the images they were measured on."""
import io
import json
import tarfile

import numpy as np
import torch
from PIL import Image


def pool_images(folder):
    """The image-only pool in the order iomm reads it (shards by name, members in order), as [-1, 1] NCHW."""
    images = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
                    images.append(np.asarray(img))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).double()
    return x / 127.5 - 1


def test_exported_autoencoder_is_a_diffusers_autoencoderkl(iomm, tmp_path):
    from diffusers import AutoencoderKL

    world = tmp_path / "world"
    iomm("world", "make", "--out", world, "--seed", "5", "--image-only", "160", "--captioned", "0")
    run = tmp_path / "ae"
    iomm("train", "--config", "configs/world/autoencoder.toml", "--set", f"data.images={world / 'image'}",
         "--set", "data.holdout=32", "--set", "train.steps=40", "--set", "train.stats_samples=64",
         "--set", "train.checkpoint_every=0", "--set", "train.threads=1", "--out", run)
    ev = json.loads((run / "autoencoder_eval.json").read_text())
    assert ev["train_images"] == 128 and ev["held_out_images"] == 32, ev

    vae = AutoencoderKL.from_pretrained(run / "model").double().eval()  # fails on any missing or unexpected name
    cfg = vae.config
    assert cfg.latent_channels == 8 and list(cfg.block_out_channels) == [32, 64, 64]
    assert abs(cfg.scaling_factor - ev["latent_scale"]) < 1e-9 and abs(cfg.shift_factor - ev["latent_shift"]) < 1e-9

    x = pool_images(world / "image")
    assert x.shape == (160, 3, 32, 32)
    with torch.no_grad():
        mu = vae.encode(x[:64]).latent_dist.mean
        z = (mu - cfg.shift_factor) * cfg.scaling_factor
        assert abs(z.mean().item()) < 1e-5 and abs(z.std(unbiased=False).item() - 1) < 1e-5

        held = x[128:]
        y = vae.decode(vae.encode(held).latent_dist.mean).sample.clamp(-1, 1)
    mse = (((y - held) / 2) ** 2).mean().item()
    psnr = 10 * np.log10(1 / mse)
    # iomm computes in float32, diffusers here in float64.
    assert abs(psnr - ev["held_out_psnr_db"]) < 0.02, (psnr, ev)
    assert psnr > 14.0, psnr  # 40 steps: well above an untrained autoencoder's ~6 dB
