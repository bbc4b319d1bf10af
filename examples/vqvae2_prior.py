"""VQ-VAE-2 [1] on Fashion-MNIST, end to end: two code maps, two pixelmodels priors, hierarchical samples.

The workflow of [1], sized for a quarter of an hour on a 2-core CPU:

1. A two-level VQ-VAE compresses each 28x28 image into a 7x7 map of ``--top-codes`` codes (the
   global shape) and a 14x14 map of ``--bottom-codes`` codes (the local detail). The bottom
   quantizer sees the bottom encoder features and the top codes decoded to 14x14, so the bottom
   codes hold what the top codes miss; the decoder reads both maps.
2. The code maps of both splits are saved as ``arrays`` datasets (``OUT/codes/{top,bottom}``); the
   bottom files carry the top codes as their condition, so the CLI can train either prior too.
3. A top prior (class-conditional) models the 7x7 top codes; a bottom prior models the 14x14
   bottom codes conditioned on the top codes (``create_model(..., cond_shape=(7, 7),
   cond_codes=K_top)``: an embedding table, upsampled, a bias in every layer). Each prints its
   test bits per code beside log2(K), the uniform prior's.
4. Sampling is hierarchical: top maps for each class, then bottom maps given them, then the
   decoder. It prints the time of the cached sampler against the reference loop (``cached=False``,
   a forward pass per position, as rosinality/vq-vae-2-pytorch samples) and writes
   ``OUT/samples.png`` (one row per class) and ``OUT/reconstructions.png`` (originals,
   reconstructions, and images from the true top codes with bottom codes drawn by the prior).

    OMP_NUM_THREADS=1 python examples/vqvae2_prior.py --out runs/vqvae2   # ~14 min on a shared 2-core CPU
    python examples/vqvae2_prior.py --quick --out /tmp/vqvae2             # smoke run, about 20 s

NOTE: what differs from [1]: 28x28 grayscale images and two levels of 7x7 and 14x14 (the paper:
256x256 RGB, 32x32 and 64x64; three levels at 1024x1024); 64 hidden features and no residual
blocks in the VQ-VAE (paper: 128 and two residual blocks), Bernoulli logits instead of a squared
error; the codebooks are the EMA of the assigned encoder outputs as in [1] (decay 0.99), plus
restarts of dead codes at random encoder outputs (from Jukebox [4]). The priors are small
pixelmodels models (Gated PixelCNN [2] small; PixelSNAIL [3] with ``--top-prior`` / ``--bottom-prior``)
trained for 1000 steps each, where [1] uses large PixelSNAIL-like priors (attention in the top one), and
samples are not filtered by a classifier (the paper's rejection sampling).

[1]: Razavi, van den Oord, Vinyals 2019, Generating Diverse High-Fidelity Images with VQ-VAE-2,
     https://arxiv.org/abs/1906.00446
[2]: van den Oord et al. 2016, Conditional Image Generation with PixelCNN Decoders, https://arxiv.org/abs/1606.05328
[3]: Chen et al. 2017, PixelSNAIL: An Improved Autoregressive Generative Model, https://arxiv.org/abs/1712.09763
[4]: Dhariwal et al. 2020, Jukebox: A Generative Model for Music, https://arxiv.org/abs/2005.00341
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import pixelmodels
from pixelmodels.imageio import save_grid
from pixelmodels.training import train_step
from pixelmodels.vqvae import VectorQuantizer


class VQVAE2(nn.Module):
    """(B, 1, 28, 28) intensities in [0, 1] -> top codes (B, 7, 7) and bottom codes (B, 14, 14) -> Bernoulli
    logits (B, 1, 28, 28). The structure of rosinality/vq-vae-2-pytorch's ``VQVAE`` (enc_b, enc_t, dec_t,
    upsample_t, decoder), smaller: no residual blocks; the bottom encoder and the decoder scale by 2 (there: 4)."""

    def __init__(self, top_codes: int, bottom_codes: int, dim: int = 32, hidden: int = 64):
        super().__init__()
        self.enc_b = nn.Sequential(
            nn.Conv2d(1, hidden, 4, 2, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU())  # (B, h, 14, 14)
        self.enc_t = nn.Sequential(
            nn.Conv2d(hidden, hidden, 4, 2, 1), nn.ReLU(),  # (B, h, 7, 7)
            nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, dim, 1))  # (B, D, 7, 7)
        self.quant_t = VectorQuantizer(top_codes, dim)
        self.dec_t = nn.Sequential(  # the top codes decoded to the bottom's resolution, for the bottom quantizer
            nn.Conv2d(dim, hidden, 3, 1, 1), nn.ReLU(), nn.ConvTranspose2d(hidden, dim, 4, 2, 1))  # (B, D, 14, 14)
        self.pre_b = nn.Conv2d(hidden + dim, dim, 1)  # bottom features + decoded top -> (B, D, 14, 14)
        self.quant_b = VectorQuantizer(bottom_codes, dim)
        self.up_t = nn.ConvTranspose2d(dim, dim, 4, 2, 1)  # top code vectors to 14x14 for the decoder
        self.decoder = nn.Sequential(
            nn.Conv2d(2 * dim, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU(),
            nn.ConvTranspose2d(hidden, 1, 4, 2, 1))  # (B, 1, 28, 28) logits

    def quantize(self, x: torch.Tensor):
        """Both levels: (quantized, codes, commitment loss) of the top, then of the bottom."""
        features = self.enc_b(x)
        top = self.quant_t(self.enc_t(features))
        bottom = self.quant_b(self.pre_b(torch.cat([features, self.dec_t(top[0])], 1)))
        return top, bottom

    def logits(self, q_t: torch.Tensor, q_b: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([self.up_t(q_t), q_b], 1))  # (B, 2D, 14, 14) -> (B, 1, 28, 28)

    def forward(self, x: torch.Tensor):
        (q_t, _, loss_t), (q_b, _, loss_b) = self.quantize(x)
        return self.logits(q_t, q_b), loss_t + loss_b

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch: int = 1000):
        """Images (N, 1, 28, 28) -> top codes (N, 7, 7) and bottom codes (N, 14, 14), int64."""
        codes = [self.quantize(x[i:i + batch]) for i in range(0, len(x), batch)]
        return torch.cat([t[1] for t, _ in codes]), torch.cat([b[1] for _, b in codes])

    @torch.no_grad()
    def decode(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """Codes (B, 7, 7) and (B, 14, 14) -> intensities (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.logits(self.quant_t.lookup(top), self.quant_b.lookup(bottom)))


def fit(name: str, model: nn.Module, step_fn, n: int, steps: int, batch: int, lr: float, g: torch.Generator):
    """Adam with a cosine-decayed learning rate; ``step_fn(indices, optimizer)`` takes one optimizer step on
    a batch and gives its loss: ``pixelmodels.training.train_step`` for a pixelmodels model."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = step_fn(torch.randint(n, (batch,), generator=g), opt)
        sched.step()
        if step % max(1, steps // 4) == 0:
            print(f"  {name} step {step}/{steps}: loss {loss:.4f} [{time.perf_counter() - start:.0f} s]", flush=True)
    return model.eval(), time.perf_counter() - start


@torch.no_grad()
def bits_per_dim(model, x, y=None, cond=None, batch: int = 500) -> float:
    """Mean bits/dim of ``model`` over ``x`` (with labels ``y`` / condition ``cond``), in batches."""
    out = [model.bits_per_dim(x[i:i + batch], None if y is None else y[i:i + batch],
                              None if cond is None else cond[i:i + batch]) for i in range(0, len(x), batch)]
    return torch.cat(out).mean().item()


def perplexity(codes: torch.Tensor, n_codes: int) -> float:
    """exp(entropy) of the codes' frequencies: how many codes the map effectively uses."""
    p = torch.bincount(codes.flatten(), minlength=n_codes).float()
    p = p[p > 0] / p.sum()
    return math.exp(-(p * p.log()).sum().item())


def to8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 in [0, 255], for the grids."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def time_sampling(name: str, model, y, cond, positions: int, seed: int) -> None:
    """Print the seconds of the cached sampler and of the reference loop (``cached=False``) for one batch.

    The reference loop runs the network once per position (on the rows that can reach it) and keeps one
    output: what rosinality/vq-vae-2-pytorch's ``sample_model`` does. With ``positions`` below H * W it runs
    on that many positions spread over the map only (``complete`` samples the unknown positions and skips
    the known ones), and the whole loop's time is extrapolated from them.
    """
    n, (_, h, w) = len(y if y is not None else cond), model.image_shape
    start = time.perf_counter()
    cached = pixelmodels.sample(model, n, y, cond, generator=torch.Generator().manual_seed(seed), cached=True)
    t_cached = time.perf_counter() - start
    positions = min(positions or h * w, h * w)
    known = torch.ones(h * w, dtype=torch.bool)
    known[torch.linspace(0, h * w - 1, positions).round().long()] = False  # the positions the loop computes
    start = time.perf_counter()
    reference = pixelmodels.complete(model, torch.zeros_like(cached), known.view(h, w), y, cond=cond, cached=False,
                                     generator=torch.Generator().manual_seed(seed))
    t_full = (time.perf_counter() - start) * h * w / positions
    how = "" if positions == h * w else f", extrapolated from {positions} of {h * w} positions"
    same = f"; same codes as cached: {(reference == cached).float().mean().item():.1%}" if positions == h * w else ""
    print(f"sampling {n} {name} maps ({h}x{w}): cached {t_cached:.3g} s, full pass per position (cached=False) "
          f"{t_full:.3g} s{how}: cached {t_full / t_cached:.1f}x faster{same}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/vqvae2"), help="output folder")
    p.add_argument("--data-dir", type=Path, default=None, help="folder of the Fashion-MNIST IDX files "
                   "(default: the library's usual places, e.g. /usr/share/datasets/fashion-mnist)")
    p.add_argument("--top-codes", type=int, default=64, help="codebook size of the 7x7 top level")
    p.add_argument("--bottom-codes", type=int, default=128, help="codebook size of the 14x14 bottom level")
    p.add_argument("--vqvae-steps", type=int, default=1500)
    p.add_argument("--top-steps", type=int, default=1000, help="training steps of the top prior")
    p.add_argument("--bottom-steps", type=int, default=1000, help="training steps of the bottom prior")
    p.add_argument("--batch-size", type=int, default=64, help="batch of the VQ-VAE and the top prior")
    p.add_argument("--bottom-batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of the priors (cosine decay)")
    p.add_argument("--top-prior", default="gated-pixelcnn", choices=["gated-pixelcnn", "pixelsnail"])
    p.add_argument("--bottom-prior", default="gated-pixelcnn", choices=["gated-pixelcnn", "pixelsnail"])
    p.add_argument("--preset", default="small", help="preset of both priors")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of both priors")
    p.add_argument("--train-limit", type=int, default=60000, help="training images")
    p.add_argument("--eval-limit", type=int, default=10000, help="test images for the bits/dim")
    p.add_argument("--timed-positions", type=int, default=0,
                   help="positions of the timed reference loop (0: all; fewer: extrapolated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny priors, a few steps of everything")
    args = p.parse_args()
    if args.quick:
        args.vqvae_steps, args.top_steps, args.bottom_steps, args.train_limit, args.eval_limit = 40, 30, 30, 2000, 500
        args.batch_size, args.bottom_batch_size, args.preset, args.timed_positions = 32, 16, "tiny", 40
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    (xtr, ytr), (xte, yte) = [(d.images, d.labels) for d in (
        pixelmodels.load_dataset("fashion-mnist", s, root=args.data_dir) for s in ("train", "test"))]
    xtr, ytr, xte, yte = xtr[:args.train_limit], ytr[:args.train_limit], xte[:args.eval_limit], yte[:args.eval_limit]
    print(f"Fashion-MNIST: {len(xtr)} train, {len(xte)} test images; {torch.get_num_threads()} threads", flush=True)
    ftr, fte = xtr.float().div(255), xte.float().div(255)

    # 1. the two-level VQ-VAE
    vqvae = VQVAE2(args.top_codes, args.bottom_codes)

    def vq_step(idx, opt) -> float:
        logits, commitment = vqvae(ftr[idx])
        loss = F.binary_cross_entropy_with_logits(logits, ftr[idx]) + 0.25 * commitment  # beta = 0.25 as in [1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    vqvae, t_vq = fit("vq-vae-2", vqvae, vq_step, len(ftr), args.vqvae_steps, args.batch_size, 1e-3, g)
    start_codes = time.perf_counter()
    (ttr, btr), (tte, bte) = vqvae.encode(ftr), vqvae.encode(fte)  # int64 (N, 7, 7), (N, 14, 14)
    recon = vqvae.decode(tte, bte)
    print(f"VQ-VAE-2: test reconstruction MSE {F.mse_loss(recon, fte).item():.4f} (intensities in [0, 1]); "
          f"codebook perplexity: top {perplexity(tte, args.top_codes):.1f} of {args.top_codes}, "
          f"bottom {perplexity(bte, args.bottom_codes):.1f} of {args.bottom_codes}")

    # 2. the code maps as arrays datasets (the bottom maps carry the top maps as their condition)
    codes_dir = args.out / "codes"
    for split, t, b, y in (("train", ttr, btr, ytr), ("test", tte, bte, yte)):
        for level in ("top", "bottom"):
            (codes_dir / level).mkdir(parents=True, exist_ok=True)
        np.savez(codes_dir / "top" / f"{split}.npz", x=t.numpy(), y=y.numpy(), n_classes=np.int64(10),
                 n_codes=np.int64(args.top_codes))
        np.savez(codes_dir / "bottom" / f"{split}.npz", x=b.numpy(), cond=t.numpy(),
                 n_codes=np.int64(args.bottom_codes), cond_codes=np.int64(args.top_codes))
    print(f"code maps written to {codes_dir}/{{top,bottom}}/{{train,test}}.npz; the CLI trains the priors too:\n"
          f"  pixelmodels train --model {args.top_prior} --dataset arrays --data-dir {codes_dir / 'top'} "
          f"--conditional\n  pixelmodels train --model {args.bottom_prior} --dataset arrays "
          f"--data-dir {codes_dir / 'bottom'}")
    bottom_test = pixelmodels.load_dataset("arrays", "test", root=codes_dir / "bottom")  # read back, as the CLI does
    assert torch.equal(bottom_test.images[:, 0].long(), bte) and torch.equal(bottom_test.cond.long(), tte)
    t_codes = time.perf_counter() - start_codes

    # 3. the priors: top codes given the class, bottom codes given the top codes
    top = pixelmodels.create_model(args.top_prior, image_shape=(1, 7, 7), n_codes=args.top_codes, n_classes=10,
                                   preset=args.preset)
    bottom = pixelmodels.create_model(args.bottom_prior, image_shape=(1, 14, 14), n_codes=args.bottom_codes,
                                      cond_shape=(7, 7), cond_codes=args.top_codes, preset=args.preset)
    ttr, tte, btr, bte = ttr[:, None], tte[:, None], btr[:, None], bte[:, None]  # code maps (N, 1, h, w)
    top.initialize_from_data(ttr[:args.batch_size], ytr[:args.batch_size])  # PixelSNAIL's weight norm
    bottom.initialize_from_data(btr[:args.bottom_batch_size], cond=ttr[:args.bottom_batch_size, 0])
    top, t_top = fit(f"top prior ({args.top_prior})", top,
                     lambda i, opt: train_step(top, ttr[i], ytr[i], optimizer=opt)[0],
                     len(ttr), args.top_steps, args.batch_size, args.lr, g)
    bottom, t_bottom = fit(f"bottom prior ({args.bottom_prior})", bottom,
                           lambda i, opt: train_step(bottom, btr[i], cond=ttr[i, 0], optimizer=opt)[0],
                           len(btr), args.bottom_steps, args.bottom_batch_size, args.lr, g)
    start_eval = time.perf_counter()
    bpd_top, bpd_bottom = bits_per_dim(top, tte, yte), bits_per_dim(bottom, bte, cond=tte[:, 0])
    bpd_shuffled = bits_per_dim(bottom, bte, cond=tte[:, 0].roll(1, 0))  # each map with another image's top
    t_eval = time.perf_counter() - start_eval
    for name, model, bpd, k in (("top", top, bpd_top, args.top_codes),
                                ("bottom", bottom, bpd_bottom, args.bottom_codes)):
        print(f"{name} prior ({model.config.name} {args.preset}, {model.n_parameters():,} parameters): test "
              f"bits/dim {bpd:.4f} over {len(tte)} test maps (uniform prior: log2({k}) = {math.log2(k):.4f})")
    print(f"  bottom prior with another image's top codes: {bpd_shuffled:.4f} bits/dim; code bits per image: "
          f"{bpd_top * 49:.0f} top + {bpd_bottom * 196:.0f} bottom = {bpd_top * 49 + bpd_bottom * 196:.0f}")

    # 4. hierarchical sampling: top maps for each class, bottom maps given them, then the decoder
    time_sampling("top", top, torch.arange(16) % 10, None, args.timed_positions, args.seed)
    time_sampling("bottom", bottom, None, tte[:16, 0], args.timed_positions, args.seed)
    start_sample = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    labels = torch.arange(10).repeat_interleave(10)
    top_maps = pixelmodels.sample(top, 100, labels, generator=gen, temperature=args.temperature)[:, 0]
    bottom_maps = pixelmodels.sample(bottom, 100, cond=top_maps, generator=gen, temperature=args.temperature)[:, 0]
    save_grid(to8(vqvae.decode(top_maps, bottom_maps)), args.out / "samples.png", 8, nrow=10)
    redrawn = [pixelmodels.sample(bottom, 10, cond=tte[:10, 0], generator=gen, temperature=args.temperature)[:, 0]
               for _ in range(2)]  # new detail for the same top codes
    rows = [xte[:10], to8(recon[:10])] + [to8(vqvae.decode(tte[:10, 0], b)) for b in redrawn]
    save_grid(torch.cat(rows), args.out / "reconstructions.png", 8, nrow=10)
    print(f"seconds: VQ-VAE-2 training {t_vq:.0f}, encoding {t_codes:.0f}, top prior {t_top:.0f}, bottom prior "
          f"{t_bottom:.0f}, evaluation {t_eval:.0f}, sampling 100 + 20 images {time.perf_counter() - start_sample:.1f}")
    print(f"wrote {args.out / 'samples.png'} (one row per class, temperature {args.temperature:g})")
    print(f"wrote {args.out / 'reconstructions.png'} (rows: originals, reconstructions, two images from the true "
          f"top codes with bottom codes drawn by the bottom prior)")
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
