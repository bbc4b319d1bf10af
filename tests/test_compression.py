"""compress / decompress: exact round trips for every family, head and kind of condition; a stream about the
images' NLL in bits; the same stream whatever the thread count; every bad stream or input refused in one line.
The heads' per-channel ``log_probs``: normalized, and at the true values summing to ``-nll`` (two paths)."""

import itertools
import math
import sys

import pytest
import torch

import pixelmodels
from pixelmodels import compress, create_model, decompress, list_models
from pixelmodels.compression import _CHUNK, _HEAD, MAGIC, model_fingerprint
from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import AutoregressiveCategoricalHead, CategoricalHead, LogisticMixtureHead

SHAPE = (5, 6)
CONDS = {"vector": dict(cond_shape=(3,)), "map": dict(cond_shape=(2, 3, 3)),
         "codes": dict(cond_shape=(3, 3), cond_codes=5)}


def make(name, c=1, seed=0, **kw):
    """A tiny model far from its initialization (so no distribution is near uniform), in eval mode."""
    torch.manual_seed(seed)
    depth = {} if "n_codes" in kw or "n_bits" in kw else dict(n_bits=3)
    model = create_model(name, image_shape=(c, *SHAPE), preset="tiny", **depth, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def images_for(model, n, seed=1):
    """Uniformly random values: far from typical, some sub-pixels below the coder's least probability."""
    top = model.n_codes or 2**model.n_bits
    return torch.randint(0, top, (n, *model.image_shape), generator=torch.Generator().manual_seed(seed))


def samples_of(model, n, y=None, cond=None, seed=1):
    """Typical images: the model's own samples."""
    return pixelmodels.sample(model, n, y, cond, generator=torch.Generator().manual_seed(seed))


def cond_for(model, n, seed=2):
    g = torch.Generator().manual_seed(seed)
    if model.cond_codes:
        return torch.randint(0, model.cond_codes, (n, *model.cond_shape), generator=g)
    return torch.randn((n, *model.cond_shape), generator=g)


def nll_bits(model, x, y=None, cond=None):
    """The images' NLL in bits from the full forward pass: sum over images of -log_prob / ln 2."""
    with torch.no_grad():
        return -model.log_prob(x, y, cond).sum().item() / math.log(2)


def overhead(model, n, chunk_size):
    """Bytes of the header (labels and check included) and the chunks' own headers."""
    labels = 0 if model.n_classes is None else n
    return _HEAD.size + labels + 8 + -(-n // chunk_size) * _CHUNK.size


def one_line_error(match, fn, *args, **kw):
    with pytest.raises(PixelModelsError, match=match) as e:
        fn(*args, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


# -- round trips ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,likelihood,c", list(itertools.product(list_models(), ["categorical",
                                                                                    "logistic-mixture"], [1, 3])))
def test_round_trip_every_family_and_head(name, likelihood, c):
    model = make(name, c, likelihood=likelihood)
    x = samples_of(model, 5)
    data = compress(model, x, chunk_size=2)  # chunks of 2, 2 and 1 images
    out = decompress(model, data)
    assert out.dtype == torch.uint8 and torch.equal(out, x)
    # the stream is the images' NLL in bits, plus the header and a few bytes per chunk
    payload = 8 * (len(data) - overhead(model, 5, 2))
    assert -16 <= payload - nll_bits(model, x) <= 64 * 3, (payload, nll_bits(model, x))


@pytest.mark.parametrize("name,likelihood,n_bits,c", [("pixelcnnpp", "logistic-mixture", 8, 3),
                                                      ("gated-pixelcnn", "categorical", 8, 1),
                                                      ("row-lstm", "categorical", 8, 3),
                                                      ("pixelsnail", "logistic-mixture", 1, 1),
                                                      ("diagonal-bilstm", "categorical", 1, 3)])
def test_round_trip_at_other_bit_depths(name, likelihood, n_bits, c):
    model = make(name, c, likelihood=likelihood, n_bits=n_bits)
    x = images_for(model, 3)
    assert torch.equal(decompress(model, compress(model, x)), x.to(torch.uint8))


@pytest.mark.parametrize("name", list_models())
def test_round_trip_code_maps(name):
    model = make(name, n_codes=300)
    x = images_for(model, 3)
    out = decompress(model, compress(model, x, chunk_size=2))
    assert out.dtype == torch.int64 and torch.equal(out, x)


def test_labels_travel_in_the_stream():
    model = make("gated-pixelcnn", 3, n_classes=4)
    x, y = images_for(model, 5), torch.tensor([3, 0, 1, 3, 2])
    images, labels = decompress(model, compress(model, x, y, chunk_size=3))
    assert torch.equal(images, x.to(torch.uint8)) and torch.equal(labels, y)
    images, labels = decompress(model, compress(model, x, 2))  # one label for all
    assert torch.equal(images, x.to(torch.uint8)) and labels.tolist() == [2] * 5


@pytest.mark.parametrize("kind,name", list(itertools.product(CONDS, ["pixelcnn", "pixelsnail", "row-lstm"])))
def test_round_trip_with_a_condition(kind, name):
    model = make(name, 3, n_classes=3, **CONDS[kind])
    y, cond = torch.tensor([0, 2, 1, 1]), cond_for(model, 4)
    x = samples_of(model, 4, y, cond)
    data = compress(model, x, y, cond, chunk_size=3)
    images, labels = decompress(model, data, cond)
    assert torch.equal(images, x) and torch.equal(labels, y)
    payload = 8 * (len(data) - overhead(model, 4, 3))
    assert -16 <= payload - nll_bits(model, x, y, cond) <= 64 * 2, (payload, nll_bits(model, x, y, cond))


def test_one_condition_for_all_and_chunks_larger_than_the_batch():
    model = make("gated-pixelcnn", **CONDS["vector"])
    x, cond = images_for(model, 3), torch.tensor([0.5, -1.0, 2.0])
    assert torch.equal(decompress(model, compress(model, x, cond=cond, chunk_size=64), cond), x.to(torch.uint8))
    assert torch.equal(decompress(model, compress(model, x, cond=cond, chunk_size=64), cond.expand(3, 3)),
                       x.to(torch.uint8))


def test_no_images():
    model = make("pixelcnn")
    out = decompress(model, compress(model, torch.zeros((0, 1, *SHAPE), dtype=torch.uint8)))
    assert out.shape == (0, 1, *SHAPE) and out.dtype == torch.uint8


def test_the_stream_is_the_nll_of_samples_in_bits():
    """8-bit RGB samples of the model: the coded bits are the NLL to a few bytes per chunk."""
    model = make("pixelcnnpp", 3, likelihood="logistic-mixture", n_bits=8)
    x = pixelmodels.sample(model, 6, generator=torch.Generator().manual_seed(0))
    data = compress(model, x, chunk_size=4)
    bits, nll = 8 * (len(data) - overhead(model, 6, 4)), nll_bits(model, x)
    assert nll > 2000 and -16 <= bits - nll <= 64 * 2, (bits, nll)


# -- threads -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encode_threads,decode_threads", [(2, 1), (1, 2)])
def test_the_thread_count_changes_nothing(encode_threads, decode_threads):
    model = make("pixelsnail", 3, likelihood="logistic-mixture", n_bits=8)
    x = images_for(model, 33)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(encode_threads)
        data = compress(model, x, chunk_size=33)
        assert torch.get_num_threads() == encode_threads  # the caller's setting is restored
        torch.set_num_threads(decode_threads)
        assert torch.equal(decompress(model, data), x.to(torch.uint8))
        assert compress(model, x, chunk_size=33) == data
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("encode_workers,decode_workers", [(1, 3), (3, 1)])
def test_chunks_coded_on_worker_threads_give_the_same_stream(encode_workers, decode_workers):
    """Chunks coded at the same time on several threads: the stream is the one a single worker writes, and
    any number of workers decodes it; the caller's thread count is restored."""
    model = make("gated-pixelcnn", 3, n_bits=8)
    x = images_for(model, 7)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        single = compress(model, x, chunk_size=2, workers=1)
        data = compress(model, x, chunk_size=2, workers=encode_workers)
        assert data == single and torch.get_num_threads() == 2
        assert torch.equal(decompress(model, data, workers=decode_workers), x.to(torch.uint8))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_floats_that_threads_round_differently_do_not_reach_the_coder(monkeypatch):
    """A large sum, which 2 threads add in another order than 1, enters every log-probability: a stream written
    on 2 threads still decodes on 1 (compression computes on one thread, whatever the caller's setting)."""
    big = torch.randn(3_000_001, generator=torch.Generator().manual_seed(1))
    previous = torch.get_num_threads()
    try:
        sums = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sums.append(big.sum().item())
        if sums[0] == sums[1]:
            pytest.skip("on this machine the sum rounds the same on 1 and 2 threads")
        model = make("pixelcnn")
        log_probs = type(model.head).log_probs

        def thread_sensitive(self, params, x, c):
            lp = log_probs(self, params, x, c)
            return lp + 1e-2 * big.sum() * torch.linspace(0, 1, lp.shape[1])

        monkeypatch.setattr(type(model.head), "log_probs", thread_sensitive)
        x = images_for(model, 4)
        torch.set_num_threads(2)
        data = compress(model, x)
        torch.set_num_threads(1)
        assert torch.equal(decompress(model, data), x.to(torch.uint8))
    finally:
        torch.set_num_threads(previous)


# -- refusals ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stream():
    """A class-conditional model, 5 images in chunks of 2, 2 and 1, and their stream."""
    model = make("gated-pixelcnn", 3, n_classes=3)
    x, y = images_for(model, 5), torch.tensor([0, 1, 2, 1, 0])
    return model, x, y, compress(model, x, y, chunk_size=2)


def chunk_offsets(model, data, n=5, chunk_size=2):
    """Where each chunk (its own header) starts in the stream."""
    offsets, at = [], _HEAD.size + n + 8
    for _ in range(-(-n // chunk_size)):
        offsets.append(at)
        at += _CHUNK.size + _CHUNK.unpack_from(data, at)[1]
    assert at == len(data)
    return offsets


def test_another_models_stream_is_refused(stream):
    model, _, _, data = stream
    other = make("gated-pixelcnn", 3, seed=1, n_classes=3)  # the same architecture, other weights
    assert model_fingerprint(other) != model_fingerprint(model)
    one_line_error("another model", decompress, other, data)


def test_a_truncated_stream_is_refused(stream):
    model, _, _, data = stream
    one_line_error(r"chunk 2 of 3: truncated", decompress, model, data[:-3])
    one_line_error(r"truncated", decompress, model, data[:60])
    one_line_error(r"truncated", decompress, model, data[:5])
    one_line_error(r"unexpected bytes after the last chunk", decompress, model, data + b"\0\0")


def test_a_flipped_byte_is_refused_and_the_chunk_named(stream):
    model, _, _, data = stream
    at = chunk_offsets(model, data)[1]
    broken = bytearray(data)
    broken[at + _CHUNK.size + 1] ^= 0x10  # the coded data of chunk 1
    one_line_error(r"chunk 1 of 3: corrupted \(its data fail their CRC-32\)", decompress, model, bytes(broken))
    broken = bytearray(data)
    broken[at + 12] ^= 0x01  # chunk 1's images checksum: decoded images that are not the encoder's
    one_line_error(r"chunk 1 of 3: the decoded images fail their checksum: the probabilities differ",
                   decompress, model, bytes(broken))
    broken = bytearray(data)
    broken[59] ^= 0x01  # the header's chunk size
    one_line_error(r"header is corrupted", decompress, model, bytes(broken))


def test_other_probabilities_at_the_decoder_are_an_error_never_wrong_images(stream, monkeypatch):
    """As on another CPU: the decoder's probabilities differ slightly from the encoder's."""
    model, _, y, data = stream
    log_probs = type(model.head).log_probs
    monkeypatch.setattr(type(model.head), "log_probs",
                        lambda self, params, x, c: log_probs(self, params * 1.01, x, c))
    one_line_error(r"chunk 0 of 3: .*the probabilities differ from the encoder's", decompress, model, data)


def test_an_unknown_magic_or_version_is_refused(stream):
    model, _, _, data = stream
    one_line_error(r"not a pixelmodels compressed stream \(it starts with b'GIF8'", decompress, model,
                   b"GIF8" + data[4:])
    one_line_error("format version 2; this pixelmodels reads version 1", decompress, model,
                   MAGIC + (2).to_bytes(2, "little") + data[6:])


def test_a_missing_or_different_condition_is_refused():
    model = make("pixelcnn", **CONDS["map"])
    x, cond = images_for(model, 2), cond_for(model, 2)
    data = compress(model, x, cond=cond)
    one_line_error("the stream was compressed with a condition", decompress, model, data)
    changed = cond.clone()
    changed[1, 0, 2, 2] += 1e-3
    one_line_error("cond: differs from the condition the stream was compressed with", decompress, model, data,
                   changed)
    one_line_error(r"cond: expected shape \(2, 2, 3, 3\)", decompress, model, data, cond[:1])


def test_images_that_do_not_fit_the_model_are_refused(stream):
    model, x, y, _ = stream
    one_line_error(r"3-bit values 0..7, found values \d..8", compress, model, torch.where(x == 7, 8, x), y)
    one_line_error("expected integer images", compress, model, x.float(), y)
    one_line_error(r"\(C, H, W\) = \(3, 5, 6\)", compress, model, x[:, :1], y)
    one_line_error("conditional on 3 classes; give y", compress, model, x)
    one_line_error(r"class labels in 0..2, found 3", compress, model, x, torch.tensor([0, 1, 2, 3, 0]))
    one_line_error("not class-conditional", compress, make("pixelcnn", 3), x, y)
    one_line_error("--chunk-size: expected at least 1, found 0", compress, model, x, y, chunk_size=0)
    one_line_error("--workers: expected at least 1, found 0", compress, model, x, y, workers=0)


def test_without_constriction_the_error_says_what_to_install(stream, monkeypatch):
    model, x, y, data = stream
    monkeypatch.setitem(sys.modules, "constriction", None)
    one_line_error(r"pip install 'pixelmodels\[compress\]'", compress, model, x, y)
    one_line_error(r"pip install 'pixelmodels\[compress\]'", decompress, model, data)


# -- the heads' per-channel log-probabilities ------------------------------------------------------------

def heads():
    torch.manual_seed(0)
    found = [CategoricalHead(3, 3), CategoricalHead(1, None, 300), AutoregressiveCategoricalHead(3, 3, 16),
             AutoregressiveCategoricalHead(1, None, 16, 300), AutoregressiveCategoricalHead(3, 8, 8),
             LogisticMixtureHead(1, 8, 5), LogisticMixtureHead(3, 3, 4), LogisticMixtureHead(3, 8, 3)]
    with torch.no_grad():
        for head in found:
            for p in head.parameters():
                p.add_(0.5 * torch.randn_like(p))
    return found


@pytest.mark.parametrize("head", heads(), ids=lambda h: f"{type(h).__name__}-{h.n_channels}-{h.n_bits}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_probs_are_the_heads_conditionals(head, dtype):
    """exp(log_probs) sums to 1 over the values, reads only earlier channels, and the sum over channels at the
    true values is the head's own -nll of the pixel."""
    n, values = 50, getattr(head, "n_values", 2 ** (head.n_bits or 0))
    params = 2 * torch.randn(n, head.n_params, dtype=dtype)
    x = torch.randint(0, values, (n, head.n_channels))
    total = torch.zeros(n, dtype=torch.float64)
    for c in range(head.n_channels):
        lp = head.log_probs(params, x, c)
        assert lp.shape == (n, values) and lp.dtype == dtype
        torch.testing.assert_close(lp.double().exp().sum(1), torch.ones(n, dtype=torch.float64), rtol=0,
                                   atol=1e-5)
        later = x.clone()
        later[:, c:] = torch.randint(0, values, (n, head.n_channels - c))
        assert torch.equal(head.log_probs(params, later, c), lp), "channel c's values read channels >= c"
        total += lp.gather(1, x[:, c, None])[:, 0].double()
    nll = head.nll(params[:, :, None, None], x[:, :, None, None])[:, 0, 0].double()
    torch.testing.assert_close(total, -nll, rtol=0, atol=1e-5)
