"""The VQ-VAE that turns a prior's code maps into images (pixelmodels.vqvae), and `generate` decoding with it."""

import json

import numpy as np
import pytest
import torch

import pixelmodels
from pixelmodels.app.cli import main
from pixelmodels.vqvae import VQVAE, has_vqvae, load_vqvae


@pytest.fixture(scope="module")
def vqvae():
    torch.manual_seed(0)
    model = VQVAE(n_codes=16, dim=8, hidden=12)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.rand(32, 1, 28, 28)
    for _ in range(5):  # the first batch initializes the codebook; a few EMA updates move it
        logits, _, commitment = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, x) + 0.25 * commitment
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_codes_are_the_nearest_codebook_vectors(vqvae):
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        z = vqvae.encoder(x)  # (4, D, 7, 7)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    nearest = torch.cdist(flat.double(), vqvae.quantizer.embed.double()).argmin(1).view(4, 7, 7)
    codes = vqvae.encode(x)
    assert codes.shape == (4, 7, 7) and codes.dtype == torch.int64
    assert torch.equal(codes, nearest)
    assert bool(vqvae.quantizer.initialized) and len(codes.unique()) > 1


def test_saved_vqvae_loads_and_encodes_and_decodes_the_same(vqvae, tmp_path):
    assert not has_vqvae(tmp_path)
    vqvae.save(tmp_path)
    assert has_vqvae(tmp_path)
    loaded = load_vqvae(tmp_path)
    assert not loaded.training and loaded.config == vqvae.config
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    codes = vqvae.encode_images(images)
    assert torch.equal(loaded.encode_images(images), codes)
    decoded = loaded.decode_images(codes)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 1, 28, 28)
    assert torch.equal(decoded, (vqvae.decode(codes) * 255).round().to(torch.uint8))
    assert torch.equal(loaded.decode_images(codes[:, None]), decoded)  # (B, 1, h, w), as a prior samples them


def test_bad_codes_and_bad_files_are_one_line_errors(vqvae, tmp_path):
    with pytest.raises(pixelmodels.PixelModelsError, match=r"codes: expected maps \(B, h, w\) of integers 0\.\.15, "
                       r"found shape \(1, 7, 7\), values 0\.\.16"):
        vqvae.decode_images(torch.tensor([[[16] + [0] * 6] * 7]))
    with pytest.raises(pixelmodels.PixelModelsError, match="found shape \\(7, 7\\)"):
        vqvae.decode_images(torch.zeros(7, 7, dtype=torch.long))
    with pytest.raises(pixelmodels.PixelModelsError, match="expected a VQ-VAE .*found no vqvae.json"):
        load_vqvae(tmp_path)
    vqvae.save(tmp_path)
    (tmp_path / "vqvae.json").write_text(json.dumps({"n_codes": 16, "dim": -8}))
    with pytest.raises(pixelmodels.PixelModelsError, match="vqvae.json: expected positive integers"):
        load_vqvae(tmp_path)


def test_generate_decodes_the_code_maps_of_a_prior_with_its_vqvae(vqvae, tmp_path, capsys):
    prior = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 7, 7), n_codes=16, n_classes=3,
                                     preset="tiny")
    folder = pixelmodels.save_pretrained(prior, tmp_path / "prior")
    out = tmp_path / "shoes.npy"
    assert main(["generate", str(folder), "--n", "3", "--class", "2", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and not out.with_suffix(".png").exists()  # no VQ-VAE: codes only
    vqvae.save(folder)
    assert main(["generate", str(folder), "--n", "3", "--class", "2", "--out", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "decoded by the VQ-VAE" in printed and str(out.with_suffix(".png")) in printed
    codes = np.load(out)
    decoded = np.load(out.with_suffix(".npz"))
    assert codes.shape == (3, 7, 7) and decoded["labels"].tolist() == [2, 2, 2]
    expected = vqvae.decode_images(torch.from_numpy(codes)).permute(0, 2, 3, 1).numpy()
    assert decoded["images"].shape == (3, 28, 28, 1) and np.array_equal(decoded["images"], expected)


def test_load_vqvae_takes_a_shipped_models_name(monkeypatch, vqvae, tmp_path):
    from pixelmodels import pretrained

    folder = tmp_path / "shipped" / "codes-prior"
    pixelmodels.save_pretrained(pixelmodels.create_model("pixelcnn", image_shape=(1, 7, 7), n_codes=16,
                                                         preset="tiny"), folder)
    vqvae.save(folder)
    monkeypatch.setattr(pretrained, "ROOT", folder.parent)
    monkeypatch.chdir(tmp_path)  # no folder named codes-prior here: the name is a shipped model's
    loaded = pixelmodels.load_vqvae("codes-prior")
    assert torch.equal(loaded.quantizer.embed, vqvae.quantizer.embed)
    with pytest.raises(pixelmodels.PixelModelsError, match="no-such: expected a VQ-VAE"):
        pixelmodels.load_vqvae("no-such")
