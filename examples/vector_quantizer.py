"""The vector quantizer both VQ-VAE examples share (``vqvae_prior.py``, ``vqvae2_prior.py``).

A codebook updated by the exponential moving average of the encoder outputs assigned to each code
(van den Oord et al. 2017, appendix A.1), with a straight-through gradient, the commitment loss
computed by the caller, and dead codes restarted at random encoder outputs (as in Jukebox). It lives
beside the examples, not in the library: to pixelmodels the codes are just maps of integers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class VectorQuantizer(nn.Module):
    """A codebook of ``n_codes`` vectors of ``dim`` features, updated by EMA, dead codes restarted."""

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
