"""The ``arrays`` dataset: .npz / .npy files written here with numpy's own writers, read back exactly.

Round trips of code maps and images (with labels and conditions of both shapes), the memory
mapping of .npy files and of .npz members stored without compression, every error a user can
cause, and a fuzz test: mutated or truncated files give a valid dataset or a one-line
``DatasetError`` naming the file, never another exception, a hang or a large allocation.
"""

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelmodels.data import ImageDataset, load_dataset
from pixelmodels.data import arrays as arrays_module
from pixelmodels.errors import DatasetError, PixelModelsError

from test_fuzz_data import allocates_little, edit, no_hang

RNG = np.random.default_rng(0)


def P(path) -> str:
    return re.escape(str(path))


def codes(n=6, h=5, w=4, k=300, dtype=np.int16, seed=0):
    return np.random.default_rng(seed).integers(0, k, (n, h, w)).astype(dtype)


def write_npz(root: Path, split="train", compressed=False, **arrays) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{split}.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def write_npy(root: Path, split="train", **arrays) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, value in arrays.items():
        paths[key] = root / f"{split}_{key}.npy"
        np.save(paths[key], value)
    return paths


def write(root: Path, form: str, split="train", **arrays):
    """Write ``arrays`` as an .npz ("npz", "npz-compressed") or as .npy files ("npy")."""
    if form == "npy":
        return write_npy(root, split, **arrays)
    return write_npz(root, split, compressed=form == "npz-compressed", **arrays)


FORMS = ["npz", "npz-compressed", "npy"]


def mapped_files() -> list[tuple[int, int, str]]:
    """(start, end, path) of this process's file mappings."""
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6:
            start, end = (int(v, 16) for v in fields[0].split("-"))
            out.append((start, end, fields[5]))
    return out


def is_mapped_from(tensor: torch.Tensor, path: Path) -> bool:
    """Whether the tensor's bytes lie in a memory mapping of ``path`` (not a copy in the heap)."""
    first, last = tensor.data_ptr(), tensor.data_ptr() + tensor.numel() * tensor.element_size()
    return any(start <= first and last <= end and name == str(path.resolve())
               for start, end, name in mapped_files())


needs_proc = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc/self/maps")


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [np.int16, np.int64])
def test_codes_round_trip_with_labels_and_vector_cond(tmp_path, form, dtype):
    x, y = codes(dtype=dtype), np.array([0, 3, 1, 1, 2, 0])
    cond = RNG.normal(size=(6, 7)).astype(np.float32)
    write(tmp_path, form, x=x, y=y, cond=cond)
    ds = load_dataset("arrays", "train", root=tmp_path, n_codes=300)
    assert isinstance(ds, ImageDataset) and len(ds) == 6
    assert ds.images.shape == (6, 1, 5, 4) and ds.images.dtype == torch.from_numpy(x).dtype
    assert np.array_equal(ds.images[:, 0].numpy(), x)
    assert (ds.n_codes, ds.n_bits, ds.n_classes, ds.image_shape) == (300, None, 4, (1, 5, 4))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == y.tolist()
    assert ds.cond.dtype == torch.float32 and ds.cond_shape == (7,)
    assert np.array_equal(ds.cond.numpy(), cond)
    image, label, c = ds[2]
    assert image.shape == (1, 5, 4) and torch.equal(image[0], torch.from_numpy(x[2]))
    assert label == 1 and isinstance(label, int) and torch.equal(c, torch.from_numpy(cond[2]))
    assert "n_codes=300" in repr(ds) and "cond_shape=(7,)" in repr(ds)


@pytest.mark.parametrize("form", FORMS)
def test_codes_with_spatial_cond_and_no_labels(tmp_path, form):
    x = codes(n=3, k=300)[:, None]  # (N, 1, H, W) is taken as it is
    cond = RNG.normal(size=(3, 2, 3, 3))  # float64: converted
    write(tmp_path, form, split="test", x=x, cond=cond)
    ds = load_dataset("arrays", "test", root=tmp_path, n_codes=300)
    assert ds.images.shape == (3, 1, 5, 4) and np.array_equal(ds.images.numpy(), x)
    assert ds.labels.tolist() == [-1, -1, -1] and ds.n_classes is None
    assert ds.cond_shape == (2, 3, 3) and ds.cond.dtype == torch.float32
    assert np.allclose(ds.cond.numpy(), cond.astype(np.float32))
    assert len(ds[1]) == 3 and ds[1][1] == -1


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("channels", [1, 3])
def test_images_round_trip(tmp_path, form, channels):
    x = RNG.integers(0, 256, (4, channels, 6, 5), dtype=np.uint8)
    write(tmp_path, form, x=x, y=np.array([1, 0, 1, 1], np.uint8))
    ds = load_dataset("arrays", root=tmp_path)
    assert ds.images.dtype == torch.uint8 and np.array_equal(ds.images.numpy(), x)
    assert (ds.n_bits, ds.n_codes, ds.n_classes, ds.cond, ds.cond_shape) == (8, None, 2, None, None)
    assert ds.image_shape == (channels, 6, 5)
    image, label = ds[3]
    assert label == 1 and torch.equal(image, torch.from_numpy(x[3]))


def test_images_of_other_integer_dtypes_and_fewer_bits(tmp_path):
    x = RNG.integers(0, 16, (3, 4, 4)).astype(">i4")  # big-endian, (N, H, W)
    write_npz(tmp_path, x=x, cond=np.arange(6).reshape(3, 2))  # integer condition
    ds = load_dataset("arrays", root=tmp_path, n_bits=4)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (3, 1, 4, 4)
    assert np.array_equal(ds.images[:, 0].numpy(), x) and ds.n_bits == 4
    assert ds.cond.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]


def test_npz_declared_n_codes_and_n_classes(tmp_path):
    x = codes(k=40)
    write_npz(tmp_path, x=x, y=np.zeros(6, np.int64), n_codes=np.int64(40), n_classes=np.int32(10))
    ds = load_dataset("arrays", root=tmp_path)
    assert (ds.n_codes, ds.n_classes, ds.n_bits) == (40, 10, None)
    assert load_dataset("arrays", root=tmp_path, n_codes=40).n_codes == 40


@pytest.mark.parametrize("dtype, k, expected", [(np.uint16, 300, torch.int16), (np.uint16, 40000, torch.int32),
                                                 (np.uint32, 300, torch.int32), (np.uint64, 300, torch.int64),
                                                 (np.uint8, 200, torch.uint8), (np.int8, 100, torch.int8)])
def test_unsigned_codes_become_signed(tmp_path, dtype, k, expected):
    x = codes(k=k, dtype=dtype)
    x[0, 0, 0] = k - 1
    write_npy(tmp_path, x=x)
    ds = load_dataset("arrays", root=tmp_path, n_codes=k)
    assert ds.images.dtype == expected
    assert np.array_equal(ds.images[:, 0].numpy().astype(np.int64), x.astype(np.int64))
    assert int(ds.images.max()) == k - 1  # max() is not implemented for torch's uint16/32/64
    batch = ds.images[torch.tensor([3, 0])]
    assert batch.long()[1, 0, 0, 0] == k - 1


def test_fortran_order_and_big_endian_codes(tmp_path):
    x = np.asfortranarray(codes(dtype=">i2"))
    write_npz(tmp_path, x=x)
    ds = load_dataset("arrays", root=tmp_path, n_codes=300)
    assert ds.images.is_contiguous() and np.array_equal(ds.images[:, 0].numpy(), x)


def test_image_dataset_takes_codes_and_cond_directly():
    x = codes(n=4, k=300, dtype=np.uint16)
    ds = ImageDataset(x, torch.arange(4), None, 4, "mine", "test", n_codes=300,
                      cond=torch.ones(4, 3, 2, 2, dtype=torch.float64))
    assert ds.images.shape == (4, 1, 5, 4) and ds.images.dtype == torch.int16
    assert (ds.n_codes, ds.n_bits, ds.cond_shape, ds.cond.dtype) == (300, None, (3, 2, 2), torch.float32)
    assert len(ds[0]) == 3
    images = ImageDataset(np.zeros((2, 1, 3, 3), np.uint8), [-1, -1], 8, cond=np.zeros((2, 5), np.float32))
    assert images.n_codes is None and images.cond_shape == (5,) and len(images[1]) == 3
    with pytest.raises(DatasetError, match=r"mine: expected codes 0..9, found 12 at index \(1, 0, 0, 2\)"):
        ImageDataset(np.array([[[0, 1, 2]], [[3, 4, 12]]]), [0, 0], None, name="mine", n_codes=10)
    with pytest.raises(DatasetError, match=r"mine: code maps \(n_codes=10\) have no n_bits"):
        ImageDataset(np.zeros((1, 2, 2), np.int64), [0], 8, name="mine", n_codes=10)
    with pytest.raises(DatasetError, match=r"mine: expected finite values, found nan at index \(1, 0\)"):
        ImageDataset(np.zeros((2, 1, 2, 2), np.uint8), [0, 0], 8, name="mine",
                     cond=np.array([[1.0], [np.nan]]))
    with pytest.raises(DatasetError, match=r"mine: expected a float condition \(2, D\) or \(2, D, h, w\)"):
        ImageDataset(np.zeros((2, 1, 2, 2), np.uint8), [0, 0], 8, name="mine", cond=np.zeros((2, 1, 1)))


def test_train_and_test_expose_what_the_caller_compares(tmp_path):
    write_npz(tmp_path, "train", x=codes(k=50), cond=np.zeros((6, 8, 2, 2), np.float32))
    write_npy(tmp_path, "test", x=codes(n=2, k=50), cond=np.zeros((2, 8, 2, 2), np.float32))
    train, test = (load_dataset("arrays", s, root=tmp_path, n_codes=50) for s in ("train", "test"))
    assert (train.n_codes, train.cond_shape, train.image_shape) == (test.n_codes, test.cond_shape, test.image_shape)


# --- memory mapping -----------------------------------------------------------------------


@needs_proc
@pytest.mark.parametrize("form", ["npz", "npy"])
def test_large_arrays_are_memory_mapped_not_copied(tmp_path, form):
    x = np.random.default_rng(1).integers(0, 512, (64, 128, 128)).astype(np.int16)  # 2 MiB
    cond = np.ones((64, 4, 8, 8), np.float32)
    paths = write(tmp_path, form, x=x, cond=cond)
    ds = load_dataset("arrays", root=tmp_path, n_codes=512)
    x_file = paths if form == "npz" else paths["x"]
    cond_file = paths if form == "npz" else paths["cond"]
    assert is_mapped_from(ds.images, x_file) and is_mapped_from(ds.cond, cond_file)
    assert not is_mapped_from(ds.labels, x_file)
    assert np.array_equal(ds.images[:, 0].numpy(), x)
    ds.images[0, 0, 0, 0] = 7 - int(x[0, 0, 0])  # copy-on-write: the file is never changed
    reread = load_dataset("arrays", root=tmp_path, n_codes=512)
    assert int(reread.images[0, 0, 0, 0]) == int(x[0, 0, 0])


@needs_proc
@pytest.mark.parametrize("form", ["npz", "npy"])
def test_a_condition_of_top_codes_is_memory_mapped_and_range_checked(tmp_path, form):
    top = np.random.default_rng(2).integers(0, 300, (64, 64, 64)).astype(np.int16)  # 512 KiB
    paths = write(tmp_path, form, x=codes(n=64, k=50), cond=top)
    ds = load_dataset("arrays", root=tmp_path, n_codes=50, cond_codes=300)
    assert is_mapped_from(ds.cond, paths if form == "npz" else paths["cond"]) and ds.cond.dtype == torch.int16
    assert np.array_equal(ds.cond.numpy(), top) and ds.cond_shape == (64, 64) and ds.cond_codes == 300
    top[32, 5, 7] = 300
    write(tmp_path, form, x=codes(n=64, k=50), cond=top)
    with pytest.raises(DatasetError, match=r"expected codes 0..299, found 300 at index \(32, 5, 7\) \(--cond-codes 300\)"):
        load_dataset("arrays", root=tmp_path, n_codes=50, cond_codes=300)


@needs_proc
def test_compressed_members_are_read_into_memory(tmp_path):
    path = write_npz(tmp_path, compressed=True, x=codes(k=300))
    ds = load_dataset("arrays", root=tmp_path, n_codes=300)
    assert not is_mapped_from(ds.images, path)
    assert np.array_equal(ds.images[:, 0].numpy(), codes(k=300))


def test_values_are_checked_in_chunks(tmp_path, monkeypatch):
    x = np.zeros((50, 3, 3), np.int32)
    x[37, 2, 1] = 300
    x[41, 0, 0] = 999
    path = write_npz(tmp_path, x=x)
    seen = []
    chunks = arrays_module._chunks
    monkeypatch.setattr(arrays_module, "CHUNK", 20)
    monkeypatch.setattr(arrays_module, "_chunks", lambda a: ((s, c) for s, c in chunks(a) if not seen.append(c.size)))
    with pytest.raises(DatasetError, match=rf"{P(path)}: 'x': expected codes 0..299, found 300 at index \(37, 0, 2, 1\)"):
        load_dataset("arrays", root=tmp_path, n_codes=300)
    assert seen and max(seen) <= 20 and len(seen) == 37 // 2 + 1


# --- errors -------------------------------------------------------------------------------


def error(root, match, **kwargs):
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset("arrays", "train", root=root, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("x, n_codes, found", [
    (np.zeros((2, 3, 3), np.float32), 300, r"expected integer codes, found float32"),
    (np.zeros((2, 3, 3), bool), None, r"expected integer images, found bool"),
    (np.zeros((2, 3, 3), np.complex64), None, r"expected integer images, found complex64"),
    (np.zeros((2, 3), np.int64), 300, r"expected \(N, H, W\) or \(N, 1, H, W\), found shape \(2, 3\)"),
    (np.zeros((2, 1, 3, 3, 1), np.int64), 300, r"expected \(N, H, W\) or \(N, 1, H, W\), found shape \(2, 1, 3, 3, 1\)"),
    (np.zeros((2, 3, 3, 3), np.int64), 300, r"expected \(N, H, W\) or \(N, 1, H, W\), found shape \(2, 3, 3, 3\)"),
    (np.zeros((2, 2, 3, 3), np.uint8), None, r"expected \(N, H, W\) or \(N, C, H, W\) with C = 1 or 3, found shape \(2, 2, 3, 3\)"),
    (np.zeros((0, 3, 3), np.int64), 300, r"expected at least one example of at least one pixel, found shape \(0, 3, 3\)"),
    (np.array([[[0, 1], [2, 300]]]), 300, r"expected codes 0..299, found 300 at index \(0, 0, 1, 1\) \(--n-codes 300\)"),
    (np.array([[[0, 1], [-2, 3]]]), 300, r"expected codes 0..299, found -2 at index \(0, 0, 1, 0\)"),
    (np.array([[[0, 1], [2, 256]]]), None, r"expected values of 8-bit images 0..255, found 256 at index \(0, 0, 1, 1\); for code maps give --n-codes K"),
    (np.array([[[0, -1]]]), None, r"expected values of 8-bit images 0..255, found -1 at index \(0, 0, 0, 1\)$"),
])
def test_bad_x(tmp_path, form, x, n_codes, found):
    paths = write(tmp_path, form, x=x)
    where = P(paths["x"]) if form == "npy" else P(paths) + ": 'x'"
    error(tmp_path, rf"^{where}: {found}", n_codes=n_codes)


def test_image_values_above_n_bits(tmp_path):
    write_npy(tmp_path, x=np.array([[[0, 15, 16]]], np.uint8))
    error(tmp_path, r"train_x.npy: expected values of 4-bit images 0..15, found 16 at index \(0, 0, 0, 2\)$", n_bits=4)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("y, found", [
    (np.zeros((6, 1), np.int64), r"expected integer labels \(6,\), one per example of x, found int64 \(6, 1\)"),
    (np.zeros(5, np.int64), r"expected integer labels \(6,\), one per example of x, found int64 \(5,\)"),
    (np.zeros(6, np.float64), r"expected integer labels \(6,\), one per example of x, found float64 \(6,\)"),
    (np.zeros(6, bool), r"expected integer labels \(6,\), one per example of x, found bool \(6,\)"),
    (np.array([0, 1, -3, 2, 0, 0]), r"expected labels 0..\d+, found -3 at index 2"),
    (np.array([0, 1, 2, 2**40, 0, 0]), r"expected labels 0..2147483647, found 1099511627776 at index 3$"),
])
def test_bad_y(tmp_path, form, y, found):
    paths = write(tmp_path, form, x=codes(), y=y)
    where = P(paths["y"]) if form == "npy" else P(paths) + ": 'y'"
    error(tmp_path, rf"^{where}: {found}", n_codes=300)


def test_labels_beyond_declared_n_classes(tmp_path):
    path = write_npz(tmp_path, x=codes(), y=np.array([0, 1, 2, 9, 0, 1]), n_classes=np.int64(5))
    error(tmp_path, rf"^{P(path)}: 'y': expected labels 0..4, found 9 at index 3 \(n_classes 5\)$", n_codes=300)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cond, found", [
    (np.zeros((6, 2), bool), r"expected a float or integer condition, found bool"),
    (np.zeros((6, 2), np.complex64), r"expected a float or integer condition, found complex64"),
    (np.zeros(6, np.float32), r"expected a condition \(6, D\) or \(6, D, h, w\), one per example of x, found shape \(6,\)"),
    (np.zeros((6, 2, 2), np.float32), r"expected a condition \(6, D\) or \(6, D, h, w\), .*found shape \(6, 2, 2\)"),
    (np.zeros((5, 2), np.float32), r"expected a condition \(6, D\) or \(6, D, h, w\), .*found shape \(5, 2\)"),
    (np.zeros((6, 0), np.float32), r"expected a condition .*found shape \(6, 0\)"),
    (np.array([[0.0]] * 4 + [[np.inf], [0.0]], np.float32), r"expected finite values, found inf at index \(4, 0\)"),
    (np.array([[0.0]] * 5 + [[np.nan]]), r"expected finite values, found nan at index \(5, 0\)"),
    (np.full((6, 1), 1e300), r"expected values within float32's range, found float64 values beyond it"),
])
def test_bad_cond(tmp_path, form, cond, found):
    paths = write(tmp_path, form, x=codes(), cond=cond)
    where = P(paths["cond"]) if form == "npy" else P(paths) + ": 'cond'"
    error(tmp_path, rf"^{where}: {found}", n_codes=300)


@pytest.mark.parametrize("compressed", [False, True])
def test_missing_x_lists_the_keys(tmp_path, compressed):
    path = write_npz(tmp_path, compressed=compressed, codes=codes(), labels=np.zeros(6))
    error(tmp_path, rf"^{P(path)}: expected an array 'x' \(N, H, W\) or \(N, C, H, W\), found keys: 'codes', 'labels'$")


def test_npz_with_a_bad_declared_n_codes(tmp_path):
    path = write_npz(tmp_path, x=codes(), n_codes=np.float32(300))
    error(tmp_path, rf"^{P(path)}: 'n_codes': expected an integer >= 2, found float32 300.0$")
    write_npz(tmp_path, x=codes(), n_codes=np.int64(300))
    error(tmp_path, rf"^{P(path)}: 'n_codes': the file declares 300 codes; --n-codes 512 differs$", n_codes=512)


@pytest.mark.parametrize("form", ["npz", "npy"])
def test_object_arrays_are_refused(tmp_path, form):
    x = np.empty((2, 2, 2), object)
    x[:] = 1
    if form == "npz":
        path = tmp_path / "train.npz"
        np.savez(path, x=x)  # numpy pickles the objects
        where = P(path) + r": 'x'"
    else:
        path = tmp_path / "train_x.npy"
        np.save(path, x, allow_pickle=True)
        where = P(path)
    error(tmp_path, rf"^{where}: refusing an array of Python objects \(dtype object\)")


def test_not_a_zip(tmp_path):
    path = tmp_path / "train.npz"
    path.write_bytes(b"this is not a zip file at all")
    error(tmp_path, rf"^{P(path)}: expected an .npz \(zip\) file of .npy arrays, found unreadable data")


def test_not_an_npy(tmp_path):
    path = tmp_path / "train_x.npy"
    with open(path, "wb") as f:
        np.savez(f, x=codes())  # a zip under the .npy name
    error(tmp_path, rf"^{P(path)}: corrupt .npy header \(the magic string is not correct")


def test_bad_npy_header(tmp_path):
    buf = io.BytesIO()
    np.save(buf, codes())
    data = buf.getvalue().replace(b"'shape': (6, 5, 4)", b"'shape': [6, 5, 4]")
    path = tmp_path / "train_x.npy"
    path.write_bytes(data)
    error(tmp_path, rf"^{P(path)}: corrupt .npy header \(")


@pytest.mark.parametrize("cut", [1, 100])
def test_truncated_npy(tmp_path, cut):
    path = write_npy(tmp_path, x=codes(dtype=np.int64))["x"]
    path.write_bytes(path.read_bytes()[:-cut])
    error(tmp_path, rf"^{P(path)}: truncated array: its header declares int64 \(6, 5, 4\), which needs 960 bytes "
                    rf"of data, found {960 - cut}$", n_codes=300)


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npy_declaring(array, shape) -> bytes:
    """An .npy file of ``array``'s bytes whose header declares ``shape``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(array.dtype),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue() + array.tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_member_declaring_more_than_the_file_holds(tmp_path, compressed):
    """A header claiming 2**40 values over 120 bytes: an error, and nothing allocated from the claim."""
    huge = npy_declaring(codes(dtype=np.int16), (2**40, 5, 4))
    path = tmp_path / "train.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as zf:
        zf.writestr("x.npy", huge)
    with allocates_little(16 << 20):
        error(tmp_path, rf"^{P(path)}: 'x': truncated array: its header declares int16 \({2**40}, 5, 4\)",
              n_codes=300)


def test_npy_declaring_more_than_the_file_holds(tmp_path):
    path = tmp_path / "train_x.npy"
    path.write_bytes(npy_declaring(codes(), (2**50, 5, 4)))
    with allocates_little(16 << 20):
        error(tmp_path, rf"^{P(path)}: truncated array", n_codes=300)


def test_truncated_npz(tmp_path):
    path = write_npz(tmp_path, x=codes())
    path.write_bytes(path.read_bytes()[:-30])  # the central directory is cut
    error(tmp_path, rf"^{P(path)}: expected an .npz \(zip\) file of .npy arrays, found unreadable data")


def test_stored_member_cut_short_in_a_rebuilt_zip(tmp_path):
    """The zip is intact but the member's .npy holds less data than its header declares."""
    path = tmp_path / "train.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", npy_bytes(codes(dtype=np.int32))[:-8])
    error(tmp_path, rf"^{P(path)}: 'x': truncated array: .*needs 480 bytes of data, found 472$", n_codes=300)


def test_both_forms_and_missing_split(tmp_path):
    write_npz(tmp_path, x=codes())
    write_npy(tmp_path, x=codes())
    error(tmp_path, rf"^{P(tmp_path)}: expected one form of the train split, found both {P(tmp_path / 'train.npz')} "
                    rf"and {P(tmp_path / 'train_x.npy')}")
    with pytest.raises(DatasetError, match=rf"^{P(tmp_path)}: expected the test split as {P(tmp_path / 'test.npz')} "
                                           rf"or {P(tmp_path / 'test_x.npy')}"):
        load_dataset("arrays", "test", root=tmp_path)


def test_option_errors(tmp_path):
    write_npz(tmp_path, x=codes())
    with pytest.raises(DatasetError, match=r"^--n-codes applies to the arrays dataset only .*mnist"):
        load_dataset("mnist", root=tmp_path, n_codes=512, download=False)
    for bad, expected in ((1, "at least 2"), (2.5, "an integer"), (True, "an integer"), ("512", "an integer")):
        found = re.escape(repr(bad))
        with pytest.raises(PixelModelsError, match=rf"^--n-codes: expected {expected}\b.*, found {found}"):
            load_dataset("arrays", "train", root=tmp_path, n_codes=bad)
    error(tmp_path, r"code maps \(--n-codes 300\) have no --n-bits; found n_bits=8", n_codes=300, n_bits=8)
    error(tmp_path, r"^image_size applies to the folder dataset only: arrays takes it from the files", image_size=5)
    error(tmp_path, r"^channels applies to the folder dataset only", channels=1)
    with pytest.raises(DatasetError, match=r"^the arrays dataset needs root \(--data-dir\)"):
        load_dataset("arrays")
    with pytest.raises(DatasetError, match=rf"^{P(tmp_path / 'train.npz')}: expected a folder"):
        load_dataset("arrays", root=tmp_path / "train.npz")


# --- fuzzing ------------------------------------------------------------------------------

# PIXELMODELS_FUZZ_EXAMPLES=2000 fuzzes harder, with fresh random examples each run.
DEEP = int(os.environ.get("PIXELMODELS_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=DEEP or 250, deadline=None, derandomize=not DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@st.composite
def mutate(draw, data: bytes, hot: list[int]) -> bytes:
    """``data`` with 1-3 edits (truncate, flip, overwrite, insert, delete), positions biased toward ``hot``."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not out:
            break
        end = len(out) - 1
        near = st.sampled_from(hot).flatmap(lambda h: st.integers(min(end, max(0, h - 8)), min(end, h + 120)))
        pos = min(end, draw(st.one_of(near, st.integers(0, end))))
        edit(draw, out, pos, draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete"])))
    return bytes(out)


def valid_arrays():
    return dict(x=codes(n=3, h=3, w=2, k=300), y=np.array([2, 0, 1]), cond=np.ones((3, 2, 2, 2), np.float32))


def check_or_clear_error(root: Path, named: list[Path], n_codes):
    with no_hang(), allocates_little(64 << 20):
        try:
            ds = load_dataset("arrays", "train", root=root, n_codes=n_codes)
        except DatasetError as exc:
            assert any(str(p) in str(exc) for p in named), f"the message does not name {named}: {exc}"
            assert "\n" not in str(exc)
            return None
    n = len(ds)
    assert n >= 1 and ds.images.ndim == 4 and ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
    if ds.n_codes is None:
        assert ds.images.dtype == torch.uint8 and int(ds.images.max()) < 2**ds.n_bits
    else:
        assert ds.images.shape[1] == 1 and not ds.images.dtype.is_floating_point
        assert 0 <= int(ds.images.min()) and int(ds.images.max()) < ds.n_codes
    if ds.n_classes is not None and (ds.labels >= 0).all():
        assert int(ds.labels.max()) < ds.n_classes
    else:
        assert (ds.labels == -1).all()
    if ds.cond is not None:
        assert ds.cond.dtype == torch.float32 and len(ds.cond) == n and torch.isfinite(ds.cond).all()
    return ds


def npz_bytes(compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **valid_arrays())
    return buf.getvalue()


def hot_spots(data: bytes) -> list[int]:
    """Offsets of zip headers and .npy headers in ``data``."""
    return [0] + [m.start() for m in re.finditer(rb"PK\x03\x04|PK\x01\x02|PK\x05\x06|PK\x06\x06|\x93NUMPY", data)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def fresh(folder: Path, name: str) -> Path:
    root = folder / name
    root.mkdir(exist_ok=True)
    for p in root.iterdir():
        p.unlink()
    return root


@FUZZ
@given(compressed=st.booleans(), n_codes=st.sampled_from([None, 300]), data=st.data())
def test_fuzz_npz(folder, compressed, n_codes, data):
    root = fresh(folder, "npz")
    valid = npz_bytes(compressed)
    path = root / "train.npz"
    path.write_bytes(data.draw(mutate(valid, hot_spots(valid))))
    check_or_clear_error(root, [path], n_codes)


@FUZZ
@given(key=st.sampled_from(["x", "y", "cond"]), n_codes=st.sampled_from([None, 300]), data=st.data())
def test_fuzz_npy(folder, key, n_codes, data):
    root = fresh(folder, "npy")
    paths = write_npy(root, **valid_arrays())
    valid = paths[key].read_bytes()
    paths[key].write_bytes(data.draw(mutate(valid, [0, 8, 60, valid.index(b"}") + 1])))
    check_or_clear_error(root, list(paths.values()), n_codes)


@FUZZ
@given(x=st.sampled_from([np.uint8, np.int8, np.int64, np.uint16, np.float32, np.bool_, ">i4", "<u8"]),
       shape=st.lists(st.integers(0, 3), min_size=0, max_size=5).map(tuple),
       fill=st.integers(-2, 400), y=st.one_of(st.none(), st.sampled_from([np.int64, np.float32, np.uint8])),
       y_len=st.integers(0, 4), cond_shape=st.one_of(st.none(), st.lists(st.integers(0, 3), max_size=5).map(tuple)),
       cond_fill=st.sampled_from([0.0, np.nan, 1e300, -1]), n_codes=st.sampled_from([None, 2, 300]),
       form=st.sampled_from(FORMS))
def test_fuzz_contents(folder, x, shape, fill, y, y_len, cond_shape, cond_fill, n_codes, form):
    """Well-formed files holding arrays of any dtype and shape: a valid dataset or a clear error."""
    root = fresh(folder, "contents")
    arrays = {"x": np.full(shape, fill).astype(x)}
    if y is not None:
        arrays["y"] = np.full(y_len, fill % 5).astype(y)
    if cond_shape is not None:
        arrays["cond"] = np.full(cond_shape, cond_fill)
    written = write(root, form, **arrays)
    check_or_clear_error(root, list(written.values()) if form == "npy" else [written], n_codes)
