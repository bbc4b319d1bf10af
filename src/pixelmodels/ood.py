"""Out-of-distribution detection: the input complexity of images under a lossless codec (Serra et al. 2020)
and the metrics of a score as a detector (AUROC, AUPRC, false-positive rate at 95% true positives).

The scores themselves come from :func:`pixelmodels.score`: bits/dim, the likelihood ratio against a
background model (Ren et al. 2019) and the complexity-corrected score S = bits/dim - complexity. Every score
is oriented the same way here: **higher means more likely out of distribution**, and out-of-distribution
images are the positive class of the metrics.

:func:`noise`, :func:`constant` and :func:`inverted` make the synthetic sets of ``pixelmodels ood``.

The codecs: ``png`` through Pillow (always there), ``webp`` and ``jpegxl`` (both lossless) through the
optional ``imagecodecs`` (``pip install 'pixelmodels[codecs]'``). The metrics are scikit-learn's
(``pip install 'pixelmodels[ood]'``).

[1] Ren et al. 2019, Likelihood Ratios for Out-of-Distribution Detection, https://arxiv.org/abs/1906.02845
[2] Serra et al. 2020, Input complexity and out-of-distribution detection with likelihood-based generative
    models, https://arxiv.org/abs/1909.11480
"""

from __future__ import annotations

import io
import math
from typing import NamedTuple

import numpy as np
import torch

from pixelmodels.config import CODECS
from pixelmodels.errors import PixelModelsError


def _imagecodecs(codec: str):
    try:
        import imagecodecs
    except ImportError:
        raise PixelModelsError(f"complexity: the {codec} codec needs imagecodecs, which is not installed; "
                               "pip install 'pixelmodels[codecs]' (png needs nothing)") from None
    return imagecodecs


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def encoder(codec: str):
    """The lossless encoder of ``codec`` (one of :data:`CODECS`): an (H, W, C) uint8 array -> bytes.

    Raises:
        PixelModelsError: an unknown codec, or one whose library is not installed.
    """
    if codec not in CODECS:
        raise PixelModelsError(f"complexity: expected a codec among {', '.join(CODECS)}, found {codec!r}")
    if codec == "png":
        return _png
    ic = _imagecodecs(codec)
    if codec == "webp":  # WebP has no grayscale: a grayscale image is coded as RGB with three equal channels
        return lambda a: ic.webp_encode(np.ascontiguousarray(np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a),
                                        level=100, lossless=True)
    return lambda a: ic.jpegxl_encode(np.ascontiguousarray(a[..., 0] if a.shape[-1] == 1 else a), lossless=True,
                                      effort=9)


def complexity(images: torch.Tensor, codec: str = "png") -> torch.Tensor:
    """The input complexity of each image: the size in bits of its file under ``codec``, lossless, per
    dimension (C * H * W), float32 (N,) on the CPU.

    The whole file is counted, headers included (a constant for images of one shape and codec). Images of
    fewer than 8 bits are coded with their values as they are (0..2**n_bits - 1 in 8-bit samples).

    Args:
        images: integer images (N, C, H, W), C 1 or 3, values 0..255.
        codec: ``png``, ``webp`` or ``jpegxl``.
    """
    encode = encoder(codec)
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.is_floating_point():
        raise PixelModelsError(f"complexity: expected integer images (N, C, H, W) with C 1 or 3, found "
                               f"{images.dtype} of shape {tuple(images.shape)}")
    if images.numel() and (int(images.min()) < 0 or int(images.max()) > 255):
        raise PixelModelsError(f"complexity: expected values 0..255, found {int(images.min())}..{int(images.max())}")
    arrays = images.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C)
    bits = [8 * len(encode(a)) for a in arrays]
    return torch.tensor(bits, dtype=torch.float64).div(math.prod(images.shape[1:])).float()


# -- synthetic out-of-distribution sets: sanity checks for any detector -----------------------------------
def noise(model, n: int, seed: int) -> torch.Tensor:
    """``n`` images (or code maps) of ``model``'s shape, every value uniform over its range, seeded."""
    high = model.n_codes or 2**model.n_bits
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, *model.image_shape), generator=g,
                         dtype=torch.int64 if model.n_codes else torch.uint8)


def constant(model, n: int, seed: int) -> torch.Tensor:
    """``n`` images (or code maps) of ``model``'s shape, each one value everywhere, the values uniform over the
    range, seeded."""
    high = model.n_codes or 2**model.n_bits
    values = torch.randint(0, high, (n, 1, 1, 1), generator=torch.Generator().manual_seed(seed),
                           dtype=torch.int64 if model.n_codes else torch.uint8)
    return values.expand(n, *model.image_shape).contiguous()


def inverted(images: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Images of ``n_bits`` values with their values reversed: v -> 2**n_bits - 1 - v."""
    return (2**n_bits - 1) - images


class Detection(NamedTuple):
    """How well a score tells out-of-distribution images (the positives) from in-distribution ones.

    Attributes:
        auroc: area under the ROC curve (0.5: chance; 1: every OOD image scores above every other).
        auprc: area under the precision-recall curve, OOD images positive (average precision).
        fpr_at_95_tpr: the fraction of in-distribution images flagged when the threshold catches 95% of the
            out-of-distribution ones.
        fpr, tpr: the ROC curve (for a plot).
    """

    auroc: float
    auprc: float
    fpr_at_95_tpr: float
    fpr: np.ndarray
    tpr: np.ndarray


def _sklearn_metrics():
    try:
        from sklearn import metrics
    except ImportError:
        raise PixelModelsError("detection metrics need scikit-learn, which is not installed; "
                               "pip install 'pixelmodels[ood]'") from None
    return metrics


def detection(inside, outside) -> Detection:
    """The metrics of a score as a detector: ``inside`` the scores of in-distribution images, ``outside``
    those of out-of-distribution ones (higher: more likely out of distribution), each at least 2 and finite.

    Raises:
        PixelModelsError: fewer than 2 scores on a side, or a score that is NaN or infinite.
    """
    metrics = _sklearn_metrics()
    inside, outside = (np.asarray(torch.as_tensor(s).double().reshape(-1)) for s in (inside, outside))
    for name, s in (("in-distribution", inside), ("out-of-distribution", outside)):
        if len(s) < 2:
            raise PixelModelsError(f"detection: expected at least 2 {name} images, found {len(s)}")
        if not np.isfinite(s).all():
            raise PixelModelsError(f"detection: expected finite scores, found NaN or inf among the {name} images")
    truth = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    scores = np.r_[inside, outside]
    fpr, tpr, _ = metrics.roc_curve(truth, scores)
    return Detection(float(metrics.roc_auc_score(truth, scores)), float(metrics.average_precision_score(truth, scores)),
                     float(fpr[np.searchsorted(tpr, 0.95)]), fpr, tpr)
