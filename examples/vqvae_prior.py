"""A pixelmodels prior over VQ-VAE codes, and a PixelCNN conditioned on a low-resolution image.

Part 1 trains a small VQ-VAE [1] on Fashion-MNIST (28x28 -> 7x7 maps of K codes; the model is
``pixelmodels.vqvae.VQVAE``), saves it (``OUT/vqvae/``, which ``pixelmodels.vqvae.load_vqvae`` reads) and
the code maps of both splits as ``arrays`` datasets (``OUT/codes/{train,test}.npz``), trains a
class-conditional autoregressive prior over them (Gated PixelCNN [2] or PixelSNAIL [3]; ``--prior-steps 0``
stops before it), prints its test bits/dim beside the uniform prior's log2(K), and writes decoded prior
samples (one row per class) and reconstructions. To pixelmodels the codes are just maps of K unordered
integers (``create_model(..., n_codes=K)``); the shipped ``fashion-mnist-codes`` is this VQ-VAE and a prior
trained on its codes with the CLI.

Part 2 shows spatial conditioning: a Gated PixelCNN over 28x28 images at ``--n-bits`` intensities
with ``cond_shape=(1, 7, 7)``, the condition being a 4x average-pooled copy of the image
(super-resolution). It prints test bits/dim with the true and with a mismatched condition (another
test image's), and writes samples drawn from the low-resolution copies of test images.

    OMP_NUM_THREADS=1 python examples/vqvae_prior.py --out runs/vqvae   # ~10 min on a shared 2-core CPU
    python examples/vqvae_prior.py --quick --out /tmp/vqvae             # smoke run, about two minutes
    python examples/vqvae_prior.py --prior pixelsnail --temperature 0.9 --out runs/vqvae-snail

The VQ-VAE (architecture and codebook updates in ``pixelmodels/vqvae.py``) is trained with Adam,
binary cross-entropy on [0, 1] intensities plus the commitment loss (beta = 0.25).

NOTE: on a CPU shared with other work, one thread per process (``OMP_NUM_THREADS=1``) ran these
small convolutions 4x faster than two.

[1]: van den Oord, Vinyals, Kavukcuoglu 2017, Neural Discrete Representation Learning, https://arxiv.org/abs/1711.00937
[2]: van den Oord et al. 2016, Conditional Image Generation with PixelCNN Decoders, https://arxiv.org/abs/1606.05328
[3]: Chen et al. 2017, PixelSNAIL: An Improved Autoregressive Generative Model, https://arxiv.org/abs/1712.09763
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
from pixelmodels.vqvae import VQVAE


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
        if step % max(1, steps // 5) == 0 or step == steps:
            print(f"  {name} step {step}/{steps}: loss {loss:.4f} [{time.perf_counter() - start:.0f} s]", flush=True)
    return model.eval(), time.perf_counter() - start


@torch.no_grad()
def bits_per_dim(model, x, y=None, cond=None, batch: int = 500) -> float:
    """Mean bits/dim of ``model`` over ``x`` (with labels ``y`` / condition ``cond``), in batches."""
    out = [model.bits_per_dim(x[i:i + batch], None if y is None else y[i:i + batch],
                              cond=None if cond is None else cond[i:i + batch]) for i in range(0, len(x), batch)]
    return torch.cat(out).mean().item()


def to8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 in [0, 255], for the grids."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def part1(args, data, device, g) -> None:
    (xtr, ytr), (xte, yte) = data
    ftr, fte = xtr.float().div(255).to(device), xte.float().div(255).to(device)

    vqvae = VQVAE(args.n_codes, args.code_dim).to(device)

    def vq_step(idx, opt) -> float:
        logits, _, commitment = vqvae(ftr[idx])
        loss = F.binary_cross_entropy_with_logits(logits, ftr[idx]) + 0.25 * commitment
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    vqvae, t_vq = fit("vq-vae", vqvae, vq_step, len(ftr), args.vqvae_steps, args.batch_size, 1e-3, g)
    start = time.perf_counter()
    ctr, cte = vqvae.encode(ftr), vqvae.encode(fte)  # int64 (N, 7, 7)
    recon = torch.cat([vqvae.decode(cte[i:i + 1000]) for i in range(0, len(cte), 1000)])
    mse = F.mse_loss(recon, fte).item()
    usage = torch.bincount(cte.flatten(), minlength=args.n_codes).float()
    p = usage / usage.sum()
    perplexity = math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())
    codes_dir = args.out / "codes"
    codes_dir.mkdir(parents=True, exist_ok=True)
    for split, c, y in (("train", ctr, ytr), ("test", cte, yte)):
        np.savez(codes_dir / f"{split}.npz", x=c.cpu().numpy(), y=y.numpy(), n_codes=np.int64(args.n_codes))
    save_grid(torch.cat([xte[:10], to8(recon[:10]).cpu()]), args.out / "reconstructions.png", 8, nrow=10)
    vqvae.save(args.out / "vqvae")
    t_enc = time.perf_counter() - start
    print(f"VQ-VAE: test reconstruction MSE {mse:.4f} (intensities in [0, 1]), codebook perplexity "
          f"{perplexity:.1f} of {args.n_codes} codes ({int((usage > 0).sum())} used on the test set)")
    print(f"codes written to {codes_dir}/{{train,test}}.npz; the prior can also be trained with the CLI:\n"
          f"  pixelmodels train --model {args.prior} --preset small --dataset arrays --data-dir {codes_dir} "
          f"--n-codes {args.n_codes} --conditional --out {args.out / 'prior-cli'}")
    print(f"VQ-VAE saved to {args.out / 'vqvae'}; seconds: training {t_vq:.0f}, encoding + reconstructions {t_enc:.0f}")
    if args.prior_steps == 0:
        return

    prior = pixelmodels.create_model(args.prior, image_shape=(1, 7, 7), n_codes=args.n_codes, n_classes=10,
                                     preset="small").to(device)
    ctr, cte = ctr[:, None], cte[:, None]  # (N, 1, 7, 7)
    ytr_d, yte_d = ytr.to(device), yte.to(device)
    prior.initialize_from_data(ctr[:args.batch_size], ytr_d[:args.batch_size])  # PixelSNAIL's weight norm
    prior, t_prior = fit(f"prior ({args.prior})", prior,
                         lambda idx, opt: train_step(prior, ctr[idx], ytr_d[idx], optimizer=opt)[0],
                         len(ctr), args.prior_steps, args.batch_size, args.lr, g)
    bpd = bits_per_dim(prior, cte, yte_d)
    print(f"prior ({args.prior}, {prior.n_parameters():,} parameters): test bits/dim over codes {bpd:.4f} "
          f"(uniform prior: log2({args.n_codes}) = {math.log2(args.n_codes):.4f}); "
          f"{bpd * 49:.1f} bits per image")
    start = time.perf_counter()
    gen = torch.Generator(device).manual_seed(args.seed)
    labels = torch.arange(10, device=device).repeat_interleave(10)
    codes = pixelmodels.sample(prior, 100, y=labels, generator=gen, cached=True, temperature=args.temperature)
    save_grid(to8(vqvae.decode(codes[:, 0])).cpu(), args.out / "prior_samples.png", 8, nrow=10)
    t_sample = time.perf_counter() - start
    print(f"seconds: prior training {t_prior:.0f}, sampling 100 code maps + decoding {t_sample:.1f}")
    print(f"wrote {args.out / 'reconstructions.png'} (originals above reconstructions) and "
          f"{args.out / 'prior_samples.png'} (one row per class, temperature {args.temperature:g})")


def part2(args, data, device, g) -> None:
    (xtr, _), (xte, _) = data
    shift = 8 - args.n_bits
    qtr, qte = (xtr >> shift).to(device), (xte[:args.eval_limit] >> shift).to(device)  # uint8 in [0, 2**n_bits)
    ltr = F.avg_pool2d(xtr.float().div(255), 4).to(device)  # (N, 1, 7, 7) in [0, 1]
    lte = F.avg_pool2d(xte[:args.eval_limit].float().div(255), 4).to(device)
    model = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 28, 28), n_bits=args.n_bits,
                                     cond_shape=(1, 7, 7), preset="small").to(device)
    model, t_train = fit("super-resolution", model,
                         lambda idx, opt: train_step(model, qtr[idx], cond=ltr[idx], optimizer=opt)[0],
                         len(qtr), args.superres_steps, args.superres_batch_size, args.lr, g)
    start = time.perf_counter()
    true_bpd = bits_per_dim(model, qte, cond=lte)
    wrong_bpd = bits_per_dim(model, qte, cond=lte.roll(1, 0))  # each image with its neighbour's condition
    t_eval = time.perf_counter() - start
    print(f"super-resolution (gated-pixelcnn small, {args.n_bits} bits, {model.n_parameters():,} parameters), "
          f"test bits/dim over {len(qte)} images: {true_bpd:.4f} with the true 7x7 condition, "
          f"{wrong_bpd:.4f} with another test image's")
    start = time.perf_counter()
    n = 10
    gen = torch.Generator(device).manual_seed(args.seed)
    samples = [pixelmodels.sample(model, n, cond=lte[:n], generator=gen, cached=True, temperature=args.temperature)
               for _ in range(2)]
    t_sample = time.perf_counter() - start
    scale = 255 / (2**args.n_bits - 1)
    rows = [to8(F.interpolate(lte[:n], scale_factor=4, mode="nearest"))]
    rows += [(s.float() * scale).round().to(torch.uint8) for s in samples] + [xte[:n].to(device)]
    save_grid(torch.cat(rows).cpu(), args.out / "superres.png", 8, nrow=n)
    print(f"seconds: training {t_train:.0f}, evaluation {t_eval:.0f}, sampling 2 x {n} images {t_sample:.1f}")
    print(f"wrote {args.out / 'superres.png'} (rows: 7x7 condition, two samples from it, the 8-bit original)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/vqvae"), help="output folder")
    p.add_argument("--n-codes", type=int, default=128, help="codebook size K")
    p.add_argument("--code-dim", type=int, default=32, help="features of a code vector")
    p.add_argument("--vqvae-steps", type=int, default=1000)
    p.add_argument("--prior-steps", type=int, default=800, help="0: stop after the VQ-VAE and its codes")
    p.add_argument("--superres-steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64, help="batch of the VQ-VAE and the prior")
    p.add_argument("--superres-batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of the pixelmodels (cosine decay)")
    p.add_argument("--prior", default="gated-pixelcnn", choices=["gated-pixelcnn", "pixelsnail"])
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--n-bits", type=int, default=3, help="intensity bits of the super-resolution model")
    p.add_argument("--eval-limit", type=int, default=1000, help="test images for the super-resolution bits/dim")
    p.add_argument("--part", choices=["1", "2", "both"], default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="smoke run: a few steps of everything, about two minutes")
    args = p.parse_args()
    if args.quick:
        args.vqvae_steps, args.superres_steps, args.eval_limit = 100, 20, 200
        args.prior_steps = min(args.prior_steps, 100)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    data = [(d.images, d.labels) for d in (pixelmodels.load_dataset("fashion-mnist", s) for s in ("train", "test"))]
    print(f"Fashion-MNIST: {len(data[0][0])} train, {len(data[1][0])} test images; device {args.device}, "
          f"{torch.get_num_threads()} threads", flush=True)
    if args.part in ("1", "both"):
        part1(args, data, args.device, g)
    if args.part in ("2", "both"):
        part2(args, data, args.device, g)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
