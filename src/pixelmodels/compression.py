"""Lossless compression driven by a model's probabilities: ``compress`` / ``decompress``.

A model's bits per dimension promises that an entropy coder fed its probabilities stores
an image in about that many bits. Here every sub-pixel's distribution comes from the cached
sampling path (``model.sampling_cache``, stepped as ``pixelmodels.sampling`` steps it) and
the head's ``log_probs``, and drives the range coder of ``constriction`` [1] (an optional
dependency: ``pip install 'pixelmodels[compress]'``). The stream is about the images' NLL
in bits plus a header and 20 bytes per chunk.

The encoder and the decoder compute each probability through the same code path, in the
same chunks of images, from the same partial image (later positions and channels zero, not
the encoder's true values), so both see the same floats. Floats may still differ between
machines, torch builds or a model's settings; a checksum per chunk of the decoded images
turns any such difference into an error, never wrong images.

Coding order, within a chunk of n images: positions in raster order, at each position the
channels in order, and for each sub-pixel the n images in order (one batched call of the
coder). Each symbol's probabilities are exp of the head's log-probabilities widened to
float64; constriction's ``Categorical(perfect=False)`` quantizes them and gives every value a
nonzero probability.

Container format, version 1 (integers little-endian)::

    header
      magic         4 bytes    b"PMC1"
      version       u16        1
      fingerprint   32 bytes   sha256 of the model's config JSON and weights (``model_fingerprint``)
      n_images      u32        N
      shape         3 x u32    (C, H, W)
      n_bits        u8         bits per sub-pixel; 0 for code maps
      n_codes       u32        K of code maps; 0 for images
      chunk_size    u32        images per chunk (the last chunk may hold fewer)
      label_bytes   u8         0 without labels; else 1, 2 or 4, the width of each label
      has_cond      u8         1 when the model takes a vector, map or code-map condition
      cond_hash     32 bytes   sha256 of the condition (``condition_hash``); zeros without one
      labels        N x label_bytes   the class labels (class-conditional models only)
      header_check  8 bytes    sha256 of the header's bytes above, first 8 bytes
    ceil(N / chunk_size) chunks, each
      count         u32        images in the chunk
      length        u32        bytes of coded data (a multiple of 4)
      data_crc      u32        CRC-32 of the coded data
      images_check  8 bytes    sha256 of the chunk's images (uint8 values, or codes as int64), first 8 bytes
      data          length bytes: the range coder's 32-bit words

A vector or map condition is side information: the stream holds its hash only, and the
caller gives the condition again to ``decompress``.

NOTE: on the CPU the number of threads changes floats (an operation split over threads
rounds its vectorized kernel's remainder elsewhere, and matrix products may block
differently: a default-preset model gives other probabilities on 3 threads than on 1), so
the model runs each chunk on one intra-op thread, and ``compress`` and ``decompress`` code
``workers`` chunks at the same time on as many threads (default: the caller's
``torch.get_num_threads()``). For the duration of the call ``torch.set_num_threads(1)``
holds; the caller's setting is restored after. The same machine, torch and model then give
the same stream whatever the caller's thread count or ``workers``; another machine or torch
build may not, and a stream that decodes to other images fails its chunk's checksum.

[1]: Bamler 2022, "Understanding Entropy Coding With Asymmetric Numeral Systems (ANS): a
     Statistician's Perspective" (constriction), https://arxiv.org/abs/2201.01741
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import struct
import zlib

import numpy as np
import torch
from tqdm.auto import tqdm

from pixelmodels.config import CodecOptions
from pixelmodels.errors import PixelModelsError, one_line
from pixelmodels.settings import check_field

MAGIC = b"PMC1"
VERSION = 1
_HEAD = struct.Struct("<4sH32sI3IBIIBB32s")  # magic .. cond_hash; then the labels and the header check
_CHUNK = struct.Struct("<III8s")  # count, length, data_crc, images_check
_CHECK = 8  # bytes of a truncated sha256


def model_fingerprint(model) -> bytes:
    """sha256 (32 bytes) of the model's config (JSON, sorted keys) and its state dict (every tensor's key,
    dtype, shape and bytes, keys in sorted order): equal only for the same architecture and weights."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(model.config), sort_keys=True, default=str).encode())
    state = model.state_dict()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.digest()


def condition_hash(cond: torch.Tensor | None) -> bytes:
    """sha256 of a condition as ``model.check_cond`` gives it (dtype, shape and bytes); 32 zeros for none."""
    if cond is None:
        return bytes(32)
    t = cond.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def _in_parallel(job, items: list, workers: int | None) -> list:
    """``[job(item) for item in items]``, the items shared among ``workers`` threads (default: the caller's
    torch thread count), each running the model on one intra-op thread (see the NOTE above); the caller's
    thread count is restored after. Chunks are independent, so the result does not depend on ``workers``."""
    previous = torch.get_num_threads()
    workers = workers or previous
    torch.set_num_threads(1)
    try:
        if workers == 1 or len(items) < 2:
            return [job(item) for item in items]
        with concurrent.futures.ThreadPoolExecutor(min(workers, len(items))) as pool:
            return list(pool.map(job, items))
    finally:
        torch.set_num_threads(previous)


def _coder():
    try:
        import constriction
    except ImportError:
        raise PixelModelsError("compression needs the constriction package, which is not installed: "
                               "pip install 'pixelmodels[compress]'") from None
    return constriction


def _images_check(x: torch.Tensor) -> bytes:
    """The first bytes of sha256 over a chunk's images: uint8 values, or codes as little-endian int64."""
    array = x.cpu().numpy().astype(np.uint8 if x.dtype == torch.uint8 else "<i8")
    return hashlib.sha256(array.tobytes()).digest()[:_CHECK]


def _probabilities(log_probs: torch.Tensor) -> np.ndarray:
    """Log-probabilities (n, V) -> float64 probabilities (n, V), computed the same way on both sides; a row
    with nothing finite to code with (NaN, or all zeros) becomes uniform."""
    p = np.exp(log_probs.detach().to("cpu", torch.float64).numpy())
    if not np.isfinite(p).all():
        p = np.nan_to_num(p, nan=0.0, posinf=0.0)
    bad = ~(p.sum(axis=1) > 0)
    if bad.any():
        p[bad] = 1.0
    return p


@torch.no_grad()
def _walk(model, n: int, y, cond, code, bar) -> torch.Tensor:
    """Step the cache over a chunk of n images in coding order; at each sub-pixel ``code(probs, c, i, j)``
    codes the n values (probs: float64 (n, V)) and returns them (n,), which fill the partial image."""
    device = next(model.parameters()).device
    channels, h, w = model.image_shape
    x = torch.zeros((n, channels, h, w), dtype=torch.long, device=device)  # what the decoder knows so far
    torch.set_num_threads(1)  # this (worker) thread's own setting: OpenMP keeps one per thread
    cache = model.sampling_cache(n, y, cond)
    for i in range(h):
        for j in range(w):
            for c in range(channels):
                if c == 0 or model.channel_masked:  # a channel-masked network steps before each channel
                    params = cache.step(x, i, j)  # (n, head.n_params)
                values = code(_probabilities(model.head.log_probs(params, x[:, :, i, j], c)), c, i, j)
                x[:, c, i, j] = torch.from_numpy(np.asarray(values, dtype=np.int64)).to(device)
        bar.update(1)
    return x.cpu() if model.n_codes else x.cpu().to(torch.uint8)


def _label_bytes(model) -> int:
    if model.n_classes is None:
        return 0
    return 1 if model.n_classes <= 1 << 8 else 2 if model.n_classes <= 1 << 16 else 4


def _side(model, n: int, cond):
    """The condition for n examples as the model checks it, on the model's device."""
    return model.check_cond(cond, n, next(model.parameters()).device)


def compress(model, images, y=None, cond=None, *, chunk_size: int = 256, workers: int | None = None,
             progress: bool = False) -> bytes:
    """Losslessly compress ``images`` with ``model``'s probabilities; returns the stream (see the module
    docstring for its format), about the images' NLL in bits long.

    Args:
        model: a registered model in eval mode (the same model, weights and settings decompress).
        images: what the model takes: integer (N, C, H, W) values in [0, 2**n_bits), or code maps
            (N, 1, H, W) in [0, n_codes).
        y: class labels of a class-conditional model, an int for all or (N,); stored in the stream.
        cond: the condition of a model with ``cond_shape``, one for all or (N, *cond_shape); not stored
            (its hash is): give it again to ``decompress``.
        chunk_size: images coded together (one batch of the cached step), 1 to 65,536; the decoder uses the
            same chunks. Larger chunks code faster per image; the coder holds a chunk's (chunk_size, V) float64
            probabilities per sub-pixel, so a prior over many codes (V = K) may want smaller chunks.
        workers: chunks coded at the same time, each on its own thread, 1 to 1024 (default:
            ``torch.get_num_threads()``); the stream does not depend on it.
        progress: show a progress bar over rows.

    ``config.CodecOptions`` declares chunk_size and workers (the CLI's ``--chunk-size`` and ``--workers``).
    """
    chunk_size = check_field(CodecOptions, "chunk_size", chunk_size)
    workers = check_field(CodecOptions, "workers", workers)
    coder = _coder()
    images = torch.as_tensor(images)
    model.check_images(images)
    n = images.shape[0]
    device = next(model.parameters()).device
    if y is not None and model.n_classes is None:
        raise PixelModelsError("labels: this model is not class-conditional; found labels y (give none)")
    labels = model.check_labels(y, n, device)
    cond = _side(model, n, cond)
    c, h, w = model.image_shape
    width = _label_bytes(model)
    head = _HEAD.pack(MAGIC, VERSION, model_fingerprint(model), n, c, h, w, model.n_bits or 0,
                      model.n_codes or 0, chunk_size, width, int(cond is not None), condition_hash(cond))
    if width:
        head += labels.cpu().numpy().astype(f"<u{width}").tobytes()
    out = [head, hashlib.sha256(head).digest()[:_CHECK]]
    family = coder.stream.model.Categorical(perfect=False)
    with tqdm(total=-(-n // chunk_size) * h, desc="compressing rows", disable=not progress, leave=False) as bar:

        def encode_chunk(start: int) -> bytes:
            truth = images[start:start + chunk_size].cpu().numpy().astype(np.int32)
            encoder = coder.stream.queue.RangeEncoder()

            def encode(probs, ch, i, j):
                values = np.ascontiguousarray(truth[:, ch, i, j])
                encoder.encode(values, family, probs)
                return values

            x = _walk(model, len(truth), _rows(labels, start, chunk_size), _rows(cond, start, chunk_size),
                      encode, bar)
            data = encoder.get_compressed().astype("<u4").tobytes()
            return _CHUNK.pack(len(truth), len(data), zlib.crc32(data), _images_check(x)) + data

        out += _in_parallel(encode_chunk, list(range(0, n, chunk_size)), workers)
    return b"".join(out)


def decompress(model, data: bytes, cond=None, *, workers: int | None = None, progress: bool = False):
    """The images a stream of ``compress`` holds, decoded with the same ``model``.

    Returns the images on the CPU, uint8 (N, C, H, W) (int64 (N, 1, H, W) for code maps), or for a
    class-conditional model the pair ``(images, labels)``, labels int64 (N,) as the stream stores them.
    ``cond``: the condition given to ``compress`` (a model with ``cond_shape`` only). ``workers``: chunks
    decoded at the same time, as for ``compress`` (any number decodes any stream).

    Raises ``PixelModelsError`` (one line) for a stream of another format, version or model, a corrupted
    or truncated stream, a missing or different condition, or a chunk whose decoded images fail their
    checksum (the probabilities differ from the encoder's: another CPU, torch or model settings).
    """
    workers = check_field(CodecOptions, "workers", workers)
    coder = _coder()
    data = bytes(data)
    header = _read_header(model, data)
    n, chunk_size, labels, offset = header["n"], header["chunk_size"], header["labels"], header["offset"]
    cond = _check_stream_cond(model, n, cond, header["cond_hash"], header["has_cond"])
    c, h, w = model.image_shape
    family = coder.stream.model.Categorical(perfect=False)
    n_chunks = -(-n // chunk_size)
    chunks = []  # (index, first image, count, images check, coded words), all read before any decoding
    for k, start in enumerate(range(0, n, chunk_size)):
        where = f"stream: chunk {k} of {n_chunks}"
        if len(data) < offset + _CHUNK.size:
            raise PixelModelsError(f"{where}: truncated (the stream ends at byte {len(data)}, inside the "
                                   "chunk's header)")
        count, length, crc, check = _CHUNK.unpack_from(data, offset)
        offset += _CHUNK.size
        if count != min(chunk_size, n - start) or length % 4:
            raise PixelModelsError(f"{where}: corrupted (it says {count} images and {length} bytes; expected "
                                   f"{min(chunk_size, n - start)} images and a multiple of 4 bytes)")
        if len(data) < offset + length:
            raise PixelModelsError(f"{where}: truncated ({len(data) - offset} of its {length} bytes)")
        words = data[offset:offset + length]
        offset += length
        if zlib.crc32(words) != crc:
            raise PixelModelsError(f"{where}: corrupted (its data fail their CRC-32)")
        chunks.append((where, start, count, check, words))
    if offset != len(data):
        raise PixelModelsError(f"stream: {len(data) - offset} unexpected bytes after the last chunk (corrupted "
                               "or two streams joined)")
    with tqdm(total=n_chunks * h, desc="decompressing rows", disable=not progress, leave=False) as bar:

        def decode_chunk(chunk) -> torch.Tensor:
            where, start, count, check, words = chunk
            decoder = coder.stream.queue.RangeDecoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))

            def decode(probs, ch, i, j):
                try:
                    return decoder.decode(family, probs)
                except (AssertionError, ValueError, RuntimeError) as e:  # constriction: data invalid for the model
                    raise PixelModelsError(f"{where}: the range decoder failed at row {i}, column {j}, channel "
                                           f"{ch} ({one_line(e, 120)}): the probabilities differ from the "
                                           "encoder's (another CPU, torch or model settings)") from None

            x = _walk(model, count, _rows(labels, start, chunk_size), _rows(cond, start, chunk_size), decode, bar)
            if _images_check(x) != check:
                raise PixelModelsError(f"{where}: the decoded images fail their checksum: the probabilities "
                                       "differ from the encoder's (another CPU, torch or model settings); "
                                       "decode on the machine and torch that encoded it")
            return x

        parts = _in_parallel(decode_chunk, chunks, workers)
    images = torch.cat(parts) if parts else torch.zeros((0, c, h, w),
                                                        dtype=torch.int64 if model.n_codes else torch.uint8)
    return (images, labels.cpu()) if model.n_classes is not None else images


def _rows(t: torch.Tensor | None, start: int, size: int) -> torch.Tensor | None:
    return None if t is None else t[start:start + size]


def _read_header(model, data: bytes) -> dict:
    """Parse and check a stream's header against ``model``; the fields, labels and where the chunks start."""
    if not data.startswith(MAGIC) and not (len(data) < len(MAGIC) and MAGIC.startswith(data)):
        raise PixelModelsError(f"stream: not a pixelmodels compressed stream (it starts with {data[:4]!r}, "
                               f"expected {MAGIC!r})")
    if len(data) < len(MAGIC) + 2:
        raise PixelModelsError(f"stream: truncated ({len(data)} bytes, inside the header)")
    version = struct.unpack_from("<H", data, 4)[0]
    if version != VERSION:
        raise PixelModelsError(f"stream: format version {version}; this pixelmodels reads version {VERSION}")
    if len(data) < _HEAD.size:
        raise PixelModelsError(f"stream: truncated ({len(data)} bytes, inside the {_HEAD.size}-byte header)")
    (_, _, fingerprint, n, c, h, w, n_bits, n_codes, chunk_size, width, has_cond,
     cond_hash) = _HEAD.unpack_from(data)
    if width not in (0, 1, 2, 4):
        raise PixelModelsError(f"stream: the header is corrupted (label width {width})")
    end = _HEAD.size + n * width
    if len(data) < end + _CHECK:
        raise PixelModelsError(f"stream: truncated ({len(data)} bytes, inside the header of {end + _CHECK})")
    if hashlib.sha256(data[:end]).digest()[:_CHECK] != data[end:end + _CHECK]:
        raise PixelModelsError("stream: the header is corrupted (it fails its checksum)")
    ours = model_fingerprint(model)
    if fingerprint != ours:
        raise PixelModelsError(f"stream: written with another model (fingerprint {fingerprint.hex()[:16]}, this "
                               f"model's {ours.hex()[:16]}); decompress with the model and weights that compressed "
                               f"it (the stream's images: {c}x{h}x{w}, "
                               f"{f'{n_bits} bits' if n_bits else f'{n_codes} codes'})")
    if (c, h, w) != tuple(model.image_shape) or width != _label_bytes(model) or chunk_size < 1:
        raise PixelModelsError("stream: the header does not fit the model it names (corrupted)")
    labels = None
    if width:
        labels = torch.from_numpy(np.frombuffer(data, f"<u{width}", n, _HEAD.size).astype(np.int64))
        labels = model.check_labels(labels, n, next(model.parameters()).device)
    return dict(n=n, chunk_size=chunk_size, labels=labels, cond_hash=cond_hash, has_cond=has_cond,
                offset=end + _CHECK)


def _check_stream_cond(model, n: int, cond, stored: bytes, has_cond: int):
    """The condition for decoding: refused when missing or other than the one the stream was written with."""
    if has_cond and cond is None:
        raise PixelModelsError(f"cond: the stream was compressed with a condition of shape "
                               f"{tuple(model.cond_shape)} per image (sha256 {stored.hex()[:16]}); give the same "
                               "cond to decompress")
    cond = _side(model, n, cond)
    found = condition_hash(cond)
    if found != stored:
        raise PixelModelsError(f"cond: differs from the condition the stream was compressed with (sha256 "
                               f"{found.hex()[:16]}, expected {stored.hex()[:16]}); give the same cond")
    return cond
