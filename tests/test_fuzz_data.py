"""Fuzzing of every dataset reader on mutated files of the real formats.

Each example starts from a small valid file (IDX raw or gzipped, a CIFAR-10
batch in its folder or tarball, the colored-MNIST pickle, PNG / JPEG images),
mutates it (truncation, flipped or overwritten bytes, insertions, header fields,
the compressed stream, the pickle's contents) and reads it with ``load_dataset``.
The only outcomes allowed are a correct dataset or a ``DatasetError`` naming the
file; any other exception, a hang (an alarm after a few seconds) or a large
allocation fails the test. Deterministic cases cover declared sizes far larger
than the file.
"""

import gzip
import math
import os
import pickle
import re
import signal
import struct
import tempfile
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelmodels.data import load_dataset, locate
from pixelmodels.data.safe_pickle import load_pickle
from pixelmodels.errors import DatasetError

from formats import (IDX_NAMES, cifar_batch_bytes, cifar_test_tar, colored_bytes, idx_bytes, image_bytes,
                     png_header, tar_bytes, write_mnist)

# PIXELMODELS_FUZZ_EXAMPLES=2000 fuzzes harder, with fresh random examples each run.
DEEP = int(os.environ.get("PIXELMODELS_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=DEEP or 60, deadline=None, derandomize=not DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_S = 10  # seconds one read may take before it counts as a hang
MAX_ALLOC = 64 << 20  # bytes a read of these tiny files may allocate at its peak


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {})


@contextmanager
def no_hang(seconds: int = HANG_S):
    def alarm(signum, frame):
        raise TimeoutError(f"a reader ran for more than {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_or_clear_error(name: str, named: Path, **kwargs):
    """load_dataset: a valid dataset, or a DatasetError naming ``named``; anything else propagates."""
    with no_hang():
        try:
            ds = load_dataset(name, download=False, **kwargs)
        except DatasetError as exc:
            assert str(named) in str(exc), f"the message does not name {named}: {exc}"
            assert "\n" not in str(exc)
            return None
    assert ds.images.dtype == torch.uint8 and ds.images.ndim == 4
    assert len(ds.labels) == len(ds.images) and ds.labels.dtype == torch.int64
    if len(ds):
        assert int(ds.images.max()) < 2**ds.n_bits
        low, high = (0, ds.n_classes - 1) if ds.n_classes else (-1, -1)
        assert low <= int(ds.labels.min()) and int(ds.labels.max()) <= high
    return ds


# --- mutations ----------------------------------------------------------------------------


@st.composite
def mutate(draw, data: bytes, header: int = 64) -> bytes:
    """``data`` with 1-3 random edits, positions biased toward the first ``header`` bytes."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not out:
            break
        end = len(out) - 1
        pos = draw(st.one_of(st.integers(0, min(header, end)), st.integers(0, end)))
        edit(draw, out, pos, draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete", "empty"])))
    return bytes(out)


def edit(draw, out: bytearray, pos: int, kind: str) -> None:
    """One edit of ``out`` at ``pos``: truncate, flip, overwrite, insert, delete, or empty it."""
    if kind == "truncate":
        del out[pos:]
    elif kind == "flip":
        out[pos] ^= draw(st.integers(1, 255))
    elif kind == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=8))
        out[pos:pos + len(chunk)] = chunk
    elif kind == "insert":
        out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    elif kind == "delete":
        del out[pos:pos + draw(st.integers(1, 16))]
    else:
        out.clear()


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def fresh(folder: Path, name: str) -> Path:
    """An empty subfolder of ``folder`` for one example."""
    path = folder / name
    if path.exists():
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- IDX (mnist, fashion-mnist) -------------------------------------------------------------


IMAGES = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
LABELS = np.array([3, 0, 9], np.uint8)


@FUZZ
@given(which=st.sampled_from([0, 1]), gz=st.booleans(), compressed_edit=st.booleans(), data=st.data())
def test_idx_mutated_bytes(folder, which, gz, compressed_edit, data):
    root = fresh(folder, "idx")
    files = [idx_bytes(IMAGES), idx_bytes(LABELS)]
    raw = files[which]
    if gz and compressed_edit:  # corrupt the gzip stream itself
        contents = [gzip.compress(f, mtime=0) for f in files]
        contents[which] = data.draw(mutate(contents[which], header=24))
    else:
        files[which] = data.draw(mutate(raw, header=24))
        contents = [gzip.compress(f, mtime=0) if gz else f for f in files]
    paths = [root / (n + (".gz" if gz else "")) for n in IDX_NAMES["test"]]
    for path, content in zip(paths, contents):
        path.write_bytes(content)
    ds = read_or_clear_error("mnist", paths[which], split="test", root=root)
    if ds is not None and contents[which] == (gzip.compress(raw, mtime=0) if gz else raw):
        assert np.array_equal(ds.images[:, 0].numpy(), IMAGES) and ds.labels.tolist() == LABELS.tolist()


INT32 = st.one_of(st.integers(-2**31, 2**31 - 1), st.sampled_from([0, 1, 2, 3, 27, 28, 29, 2**31 - 1, -1]))


@FUZZ
@given(magic=st.one_of(st.just(2051), INT32), dims=st.lists(INT32, min_size=3, max_size=3),
       extra=st.integers(-30, 30), gz=st.booleans())
def test_idx_header_fields(folder, magic, dims, extra, gz):
    """Any magic number and dimensions (huge ones included), with a body of about the declared length."""
    root = fresh(folder, "idx-header")
    declared = math.prod(dims) if min(dims) >= 0 else 0
    body = bytes(max(0, min(declared, 3 * 28 * 28) + extra))  # never more than a few kB, whatever is declared
    images = struct.pack(">4i", magic, *dims) + body
    labels = idx_bytes(np.zeros(max(0, min(dims[0], 10)), np.uint8))
    path = root / IDX_NAMES["train"][0]
    for p, content in ((path, images), (root / IDX_NAMES["train"][1], labels)):
        p.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    read_or_clear_error("fashion-mnist", path, split="train", root=root)


# --- CIFAR-10 -----------------------------------------------------------------------------


def cifar_folder(root: Path, test_batch: bytes) -> Path:
    batches = root / "cifar-10-batches-py"
    batches.mkdir()
    (batches / "test_batch").write_bytes(test_batch)
    return batches / "test_batch"


@FUZZ
@given(protocol=st.sampled_from([2, 4, 5]), data=st.data())
def test_cifar_batch_mutated_bytes(folder, protocol, data):
    root = fresh(folder, "cifar")
    valid = cifar_batch_bytes(2, 0, protocol)
    path = cifar_folder(root, data.draw(mutate(valid, header=120)))
    read_or_clear_error("cifar10", path, split="test", root=root)


@FUZZ
@given(gz=st.booleans(), compressed_edit=st.booleans(), data=st.data())
def test_cifar_tarball_mutated_bytes(folder, gz, compressed_edit, data):
    root = fresh(folder, "cifar-tar")
    tar = cifar_test_tar(gz=False)
    if gz and compressed_edit:
        content = data.draw(mutate(gzip.compress(tar, mtime=0), header=40))
    else:
        content = data.draw(mutate(tar, header=512))  # the member's tar header
        content = gzip.compress(content, mtime=0) if gz else content
    path = root / ("cifar-10-python.tar.gz" if gz else "cifar-10-python.tar")
    path.write_bytes(content)
    read_or_clear_error("cifar10", path, split="test", root=path)


def leaves():
    """Values a pickled data file might hold where arrays and label lists are expected."""
    dtypes = st.sampled_from([np.uint8, np.int8, np.int64, np.uint16, np.float32, np.float64, np.bool_])
    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
    arrays = st.builds(lambda dt, shape, fill: np.full(shape, fill).astype(dt), dtypes, shapes, st.integers(0, 300))
    cifar_like = st.builds(lambda n, fill: np.full((n, 3072), fill, np.uint8), st.integers(0, 3), st.integers(0, 255))
    colored_like = st.builds(lambda n, fill, dt: np.full((n, 28, 28, 3), fill).astype(dt),
                             st.integers(0, 2), st.integers(-2, 300), st.sampled_from([np.uint8, np.int64, np.float32]))
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=5),
                        st.binary(max_size=5))
    return st.one_of(scalars, arrays, cifar_like, colored_like,
                     st.lists(st.one_of(st.integers(-2**70, 2**70), st.floats(), st.none()), max_size=4))


def contents(keys):
    values = st.recursive(leaves(), lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(st.text(max_size=3), inner, max_size=2)),
                          max_leaves=6)
    key = st.one_of(st.sampled_from(keys), st.sampled_from([k.encode() for k in keys]), st.text(max_size=3))
    return st.one_of(values, st.dictionaries(key, values, max_size=3))


@FUZZ
@given(content=contents(["data", "labels"]), protocol=st.sampled_from([2, 4, 5]))
def test_cifar_batch_wrong_contents(folder, content, protocol):
    root = fresh(folder, "cifar-contents")
    path = cifar_folder(root, pickle.dumps(content, protocol=protocol))
    read_or_clear_error("cifar10", path, split="test", root=root)


# --- colored MNIST ------------------------------------------------------------------------


@FUZZ
@given(protocol=st.sampled_from([2, 4, 5]), data=st.data())
def test_colored_mnist_mutated_bytes(folder, protocol, data):
    root = fresh(folder, "colored")
    path = root / "mnist_colored.pkl"
    path.write_bytes(data.draw(mutate(colored_bytes(2, 0, protocol), header=120)))
    read_or_clear_error("colored-mnist", path, split="train", root=root)


@FUZZ
@given(content=contents(["train", "test"]), protocol=st.sampled_from([2, 4, 5]))
def test_colored_mnist_wrong_contents(folder, content, protocol):
    root = fresh(folder, "colored-contents")
    path = root / "mnist_colored.pkl"
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    read_or_clear_error("colored-mnist", path, split="test", root=root)


# --- image folder -------------------------------------------------------------------------


@FUZZ
@given(fmt=st.sampled_from(["PNG", "JPEG"]), mode=st.sampled_from(["RGB", "L"]), channels=st.sampled_from([1, 3]),
       data=st.data())
def test_folder_mutated_images(folder, fmt, mode, channels, data):
    root = fresh(folder, "images")
    valid = image_bytes(fmt, (6, 5), mode)
    (root / "a_good.png").write_bytes(image_bytes("PNG", (4, 4)))
    path = root / f"b_fuzzed.{fmt.lower()}"
    path.write_bytes(data.draw(mutate(valid, header=100)))
    splits = [read_or_clear_error("folder", path, root=root, split=split, image_size=4, channels=channels)
              for split in ("train", "test")]  # two images: one of them held out for test
    if None not in splits:
        assert [tuple(ds.images.shape) for ds in splits] == [(1, channels, 4, 4)] * 2


# --- declared sizes far beyond the file ---------------------------------------------------


@contextmanager
def allocates_little(limit: int = MAX_ALLOC):
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"reading a tiny file allocated {peak / 2**20:.0f} MiB"


def pickle_with(opcodes: bytes) -> bytes:
    return b"\x80\x02" + opcodes + b"."


HUGE_PICKLES = {
    # BYTEARRAY8 / BINBYTES8 / BINUNICODE8 declaring 2**40 bytes
    "bytearray8": b"\x80\x05\x96" + (2**40).to_bytes(8, "little") + b"x.",
    "binbytes8": b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"x.",
    "binunicode8": b"\x80\x04\x8d" + (2**40).to_bytes(8, "little") + b"x.",
    "frame": b"\x80\x04\x95" + (2**40).to_bytes(8, "little") + b"}.",
    # numpy.ndarray((2**31,), 'u1') called directly, then bytearray(2**31)
    "ndarray-call": pickle_with(b"cnumpy\nndarray\n(\x8a\x05" + (2**31).to_bytes(5, "little")
                                + b"\x85U\x02u1tR"),
    "bytearray-call": pickle_with(b"cbuiltins\nbytearray\n\x8a\x05" + (2**31).to_bytes(5, "little") + b"\x85R"),
    # an ndarray whose state declares (2**33,) items over 3 bytes of data
    "array-state": pickle_with(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
                               b"(K\x01\x8a\x05" + (2**33).to_bytes(5, "little") + b"\x85"
                               b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xff"
                               b"J\xff\xff\xff\xffK\x00tb\x89U\x03abctb"),
    # LONG_BINPUT at memo index 2**29: the unpickler would grow its memo table to 4 GiB
    "memo-index": b"\x80\x04}r" + (2**29).to_bytes(4, "little") + b".",
    # an object array (refused: only plain numeric dtypes)
    "object-array": pickle_with(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
                                b"(K\x01\x8a\x05" + (2**33).to_bytes(5, "little") + b"\x85"
                                b"cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xff"
                                b"J\xff\xff\xff\xffK?tb\x89]tb"),
}


@pytest.mark.parametrize("name", sorted(HUGE_PICKLES))
def test_pickle_declaring_huge_sizes_is_refused_without_allocating(tmp_path, name):
    path = tmp_path / "mnist_colored.pkl"
    path.write_bytes(HUGE_PICKLES[name])
    with allocates_little(), no_hang(), pytest.raises(DatasetError, match=re.escape(str(path))):
        load_dataset("colored-mnist", root=tmp_path, download=False)


def test_safe_pickle_still_reads_numpy_arrays_of_every_protocol():
    arrays = {"u1": np.arange(6, dtype=np.uint8).reshape(2, 3), "i8": np.array([-1, 2**40]),
              "f4": np.array([[0.5]], np.float32), "fortran": np.asfortranarray(np.arange(6).reshape(2, 3)),
              ">i4": np.array([1, 2], ">i4"), "scalar": np.int64(7), "labels": [1, 2, 3]}
    for protocol in range(2, 6):
        back = load_pickle(pickle.dumps(arrays, protocol=protocol), "memory")
        assert set(back) == set(arrays)
        for key, value in arrays.items():
            assert np.array_equal(back[key], value) and np.asarray(back[key]).dtype == np.asarray(value).dtype, key


def test_idx_declaring_huge_dimensions(tmp_path):
    write_mnist(tmp_path, "test", n=2)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">4i", 2051, 2**31 - 1, 2**31 - 1, 2**31 - 1) + bytes(100)))
    with allocates_little(), pytest.raises(DatasetError, match=rf"{re.escape(str(path))}: truncated IDX file"):
        load_dataset("mnist", "test", root=tmp_path, download=False)


def test_tar_member_with_a_negative_size_does_not_hang(tmp_path):
    """Python 3.11's tarfile loops forever over a header whose size points back at itself."""
    raw = bytearray(tar_bytes({"cifar-10-batches-py/other": bytes(1000),
                               "cifar-10-batches-py/test_batch": cifar_batch_bytes()}, gz=False))
    second = 512 + 1024  # header, 1000 bytes padded to 1024, then the second header
    size = bytearray(((-512) % 2**96).to_bytes(12, "big"))
    size[0] = 0xFF  # base-256 negative number: offset = data start - 512 = this header again
    raw[second + 124:second + 136] = size
    raw[second + 148:second + 156] = b" " * 8
    raw[second + 148:second + 156] = b"%06o\x00 " % sum(raw[second:second + 512])
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with no_hang(), pytest.raises(DatasetError, match=rf"{re.escape(str(path))}: .*corrupt header"):
        load_dataset("cifar10", "test", root=path, download=False)


def test_tar_member_declaring_a_huge_size(tmp_path):
    raw = bytearray(cifar_test_tar(gz=False))
    raw[124:136] = b"%011o\x00" % (2**33 - 1)  # 8 GiB in octal
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\x00 " % sum(raw[:512])
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with allocates_little(), no_hang(), pytest.raises(DatasetError, match=re.escape(str(path))):
        load_dataset("cifar10", "test", root=path, download=False)


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (10_000, 9_000), (1, 2**31 - 1)])
def test_png_declaring_huge_dimensions(tmp_path, width, height):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(width, height))
    before = peak_rss_mb()
    with no_hang(), pytest.raises(DatasetError, match=rf"{re.escape(str(path))}: expected a readable PNG"):
        load_dataset("folder", root=tmp_path, image_size=4)
    assert peak_rss_mb() - before < 256


def test_empty_files(tmp_path):
    cases = [("mnist", "t10k-images-idx3-ubyte"), ("colored-mnist", "mnist_colored.pkl"),
             ("cifar10", "cifar-10-python.tar.gz"), ("folder", "empty.png")]
    for name, filename in cases:
        root = tmp_path / name
        if name == "mnist":
            write_mnist(root, "test", n=1, gz=False)
        root.mkdir(exist_ok=True)
        (root / filename).write_bytes(b"")
        with pytest.raises(DatasetError, match=re.escape(str(root / filename))):
            load_dataset(name, "test", root=root, download=False)
