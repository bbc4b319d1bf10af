"""A small VQ-VAE: images -> maps of discrete codes -> images, so a shipped prior over codes can draw images.

To the models of pixelmodels codes are maps of ``n_codes`` unordered integers (``create_model(...,
n_codes=K)``); this module is what turns them back into pictures. It holds the VQ-VAE of
``examples/vqvae_prior.py`` (van den Oord, Vinyals, Kavukcuoglu 2017, Neural Discrete Representation
Learning, https://arxiv.org/abs/1711.00937), which ``fashion-mnist-codes`` ships beside its prior, and the
vector quantizer both VQ-VAE examples share. Training it is the examples' business.

Encoder: conv 4x4 stride 2 twice (28 -> 14 -> 7), conv 3x3, a 1x1 projection to ``dim`` features; the
nearest code by Euclidean distance. Decoder: conv 3x3, transposed convs 4x4 stride 2 twice (7 -> 14 -> 28),
Bernoulli logits of [0, 1] intensities. The codebook is the exponential moving average of the encoder
outputs assigned to each code ([1], appendix A.1), initialized from the first batch, with a
straight-through gradient; a code whose average count falls below one is restarted at a random encoder
output (as in Jukebox, Dhariwal et al. 2020). NOTE: the paper adds two residual blocks to the encoder and
the decoder and uses 256 hidden features; this one (64) is sized for minutes of CPU training.

>>> vqvae = load_vqvae("fashion-mnist-codes")  # the VQ-VAE shipped beside that prior; or a folder
>>> codes = vqvae.encode_images(images)       # uint8 (B, 1, 28, 28) -> int64 (B, 7, 7)
>>> vqvae.decode_images(codes)                # -> uint8 (B, 1, 28, 28)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelmodels import checkpoint as ckpt
from pixelmodels.config import read_config
from pixelmodels.pretrained import list_pretrained, pretrained_path
from pixelmodels.errors import PixelModelsError

CONFIG = "vqvae.json"
WEIGHTS = "vqvae.safetensors"


class VectorQuantizer(nn.Module):
    """A codebook of ``n_codes`` vectors of ``dim`` features, updated by EMA, dead codes restarted; the
    caller adds the commitment loss it returns."""

    def __init__(self, n_codes: int, dim: int, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.n_codes, self.decay, self.eps = n_codes, decay, eps
        self.register_buffer("embed", torch.zeros(n_codes, dim))
        self.register_buffer("embed_sum", torch.zeros(n_codes, dim))
        self.register_buffer("count", torch.zeros(n_codes))
        self.register_buffer("initialized", torch.tensor(False))

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder outputs (B, D, H, W) -> index of the nearest code, int64 (B, H, W)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B*H*W, D)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed.T + self.embed.pow(2).sum(1)
        return dist.argmin(1).view(z.shape[0], *z.shape[2:])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, H, W) -> their vectors (B, D, H, W)."""
        return F.embedding(codes, self.embed).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor):
        """Quantized z with a straight-through gradient, the codes and the commitment loss."""
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if self.training and not self.initialized:
            self.restart(flat, torch.ones_like(self.count, dtype=torch.bool))
            self.initialized.fill_(True)
        codes = self.codes(z)
        q = self.lookup(codes)
        if self.training:
            self.update(flat, codes.flatten())
        return z + (q - z).detach(), codes, F.mse_loss(z, q.detach())

    @torch.no_grad()
    def update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        onehot = F.one_hot(codes, self.n_codes).type_as(flat)  # (N, K)
        self.count.lerp_(onehot.sum(0), 1 - self.decay)
        self.embed_sum.lerp_(onehot.T @ flat, 1 - self.decay)
        n = self.count.sum()
        count = (self.count + self.eps) / (n + self.n_codes * self.eps) * n  # Laplace smoothing
        self.embed.copy_(self.embed_sum / count[:, None])
        self.restart(flat, self.count < 1.0)

    @torch.no_grad()
    def restart(self, flat: torch.Tensor, dead: torch.Tensor) -> None:
        """Move the ``dead`` codes onto random encoder outputs of this batch."""
        picks = flat[torch.randint(len(flat), (int(dead.sum()),), device=flat.device)]
        self.embed[dead], self.embed_sum[dead], self.count[dead] = picks, picks, 1.0


@dataclass(frozen=True)
class VQVAEConfig:
    """What rebuilds a :class:`VQVAE` (``vqvae.json``): codebook size, code features, hidden features,
    image channels."""
    n_codes: int = 128
    dim: int = 32
    hidden: int = 64
    channels: int = 1


class VQVAE(nn.Module):
    """(B, C, H, W) intensities in [0, 1] -> (B, H/4, W/4) codes -> (B, C, H, W) Bernoulli logits."""

    def __init__(self, n_codes: int = 128, dim: int = 32, hidden: int = 64, channels: int = 1):
        super().__init__()
        self.config = VQVAEConfig(n_codes, dim, hidden, channels)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, hidden, 4, 2, 1), nn.ReLU(),  # (B, h, H/2, W/2)
            nn.Conv2d(hidden, hidden, 4, 2, 1), nn.ReLU(),  # (B, h, H/4, W/4)
            nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, dim, 1))  # (B, D, H/4, W/4)
        self.quantizer = VectorQuantizer(n_codes, dim)
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, 1, 1), nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, 2, 1), nn.ReLU(),  # (B, h, H/2, W/2)
            nn.ConvTranspose2d(hidden, channels, 4, 2, 1))  # (B, C, H, W) logits

    def forward(self, x: torch.Tensor):
        """Logits of the reconstruction, the codes and the commitment loss of [0, 1] intensities ``x``."""
        q, codes, commitment = self.quantizer(self.encoder(x))
        return self.decoder(q), codes, commitment

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        """Intensities (B, C, H, W) in [0, 1] -> codes, int64 (B, H/4, W/4)."""
        return torch.cat([self.quantizer.codes(self.encoder(x[i:i + batch])) for i in range(0, len(x), batch)])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) -> intensities (B, C, 4h, 4w) in [0, 1]."""
        return torch.sigmoid(self.decoder(self.quantizer.lookup(codes)))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """8-bit images, uint8 (B, C, H, W) -> codes, int64 (B, H/4, W/4)."""
        device = self.quantizer.embed.device
        return self.encode(torch.as_tensor(images).to(device).float().div(255))

    def decode_images(self, codes: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        """Codes (B, h, w), or (B, 1, h, w) as a prior samples them -> 8-bit images, uint8 (B, C, 4h, 4w)."""
        codes = torch.as_tensor(codes).to(self.quantizer.embed.device).long()
        codes = codes[:, 0] if codes.dim() == 4 else codes
        if codes.dim() != 3 or codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < self.config.n_codes:
            raise PixelModelsError(f"codes: expected maps (B, h, w) of integers 0..{self.config.n_codes - 1}, "
                                   f"found shape {tuple(codes.shape)}"
                                   + (f", values {int(codes.min())}..{int(codes.max())}" if codes.numel() else ""))
        out = torch.cat([self.decode(codes[i:i + batch]) for i in range(0, len(codes), batch)])
        return out.mul(255).round().to(torch.uint8)

    def save(self, folder: str | Path) -> Path:
        """Write ``vqvae.json`` and ``vqvae.safetensors`` into ``folder`` (atomically); :func:`load_vqvae`
        reads them."""
        folder = Path(folder)
        ckpt.save_weights(folder / WEIGHTS, self.state_dict())
        ckpt.write_json(folder / CONFIG, asdict(self.config))
        return folder


def has_vqvae(folder: str | Path) -> bool:
    """Whether ``folder`` (a run or a shipped model) holds a VQ-VAE beside its prior."""
    return (Path(folder) / CONFIG).is_file()


def load_vqvae(folder: str | Path, device: str | torch.device = "cpu") -> VQVAE:
    """The VQ-VAE saved in ``folder`` by :meth:`VQVAE.save`, or shipped beside the pretrained model of that
    name (``load_vqvae("fashion-mnist-codes")``), in eval mode."""
    if not Path(folder).is_dir() and str(folder) in list_pretrained():
        folder = pretrained_path(str(folder))
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise PixelModelsError(f"{folder}: expected a VQ-VAE ({CONFIG} and {WEIGHTS}), found no {CONFIG}")
    cfg = read_config(path)
    fields = set(VQVAEConfig.__dataclass_fields__)
    if not isinstance(cfg, dict) or set(cfg) != fields or not all(isinstance(v, int) and v > 0 for v in cfg.values()):
        raise PixelModelsError(f"{path}: expected positive integers {sorted(fields)}, found {cfg!r}")
    vqvae = VQVAE(**cfg)
    ckpt.load_state_dict_checked(vqvae, ckpt.load_weights(Path(folder) / WEIGHTS), Path(folder) / WEIGHTS)
    return vqvae.to(device).eval()
