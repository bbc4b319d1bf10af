"""Tests of pixelmodels.data: tiny files in each real format, written here, read back exactly.

No test touches the network: an autouse fixture replaces ``urllib.request.urlopen``
with one that fails, and the download tests serve bytes from memory.
"""

import gzip
import hashlib
import io
import os
import pickle
import re
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelmodels.data import DATASET_INFO, ImageDataset, list_datasets, load_dataset, quantize
from pixelmodels.data import locate
from pixelmodels.errors import DatasetError, PixelModelsError

from formats import IDX_NAMES, idx_bytes, write_file, write_mnist

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def P(path) -> str:
    """A path or URL, escaped for a ``match=`` pattern."""
    return re.escape(str(path))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """An empty cache, no system folders, downloads allowed but any network use fails."""
    monkeypatch.setenv("PIXELMODELS_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("PIXELMODELS_NO_DOWNLOAD", raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {})

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"a test tried to open {url}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


# --- writers of the real formats -------------------------------------------------------


def cifar_batch(n: int, seed: int, bytes_keys: bool, protocol: int) -> tuple[bytes, np.ndarray, list]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    keys = (b"data", b"labels") if bytes_keys else ("data", "labels")
    return pickle.dumps(dict(zip(keys, (data, labels))), protocol=protocol), data, labels


def write_cifar(folder: Path, as_tarball: bool, bytes_keys: bool = True, protocol: int = 2):
    """Write 5 train batches (2 images each) and a test batch (3 images).

    Returns {split: (data (N, 3072), labels (N,))}.
    """
    members, expected = {}, {"train": ([], []), "test": ([], [])}
    for i, batch in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        split = "test" if batch == "test_batch" else "train"
        members[batch], data, labels = cifar_batch(3 if split == "test" else 2, i, bytes_keys, protocol)
        expected[split][0].append(data)
        expected[split][1].extend(labels)
    folder.mkdir(parents=True, exist_ok=True)
    if as_tarball:
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        (folder / "cifar-10-batches-py").mkdir()
        for name, data in members.items():
            (folder / "cifar-10-batches-py" / name).write_bytes(data)
    return {s: (np.concatenate(d), np.array(l)) for s, (d, l) in expected.items()}


def write_colored(path: Path, seed: int = 0, high: int = 4, protocol: int = pickle.DEFAULT_PROTOCOL):
    rng = np.random.default_rng(seed)
    content = {"train": rng.integers(0, high, (4, 28, 28, 3), dtype=np.uint8),
               "test": rng.integers(0, high, (2, 28, 28, 3), dtype=np.uint8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return content


def save_image(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


class CreatesFile:
    """A payload: unpickling it with plain pickle opens (creates) a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class RunsShell(CreatesFile):
    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


# --- registry and quantization ----------------------------------------------------------


def test_registry():
    assert list_datasets() == ["arrays", "cifar10", "colored-mnist", "fashion-mnist", "folder", "mnist"]
    assert set(DATASET_INFO) == set(list_datasets())
    assert DATASET_INFO["cifar10"].image_shape == (3, 32, 32)
    assert DATASET_INFO["colored-mnist"].n_bits == 2
    assert issubclass(DatasetError, PixelModelsError)


@pytest.mark.parametrize("n_bits", range(1, 9))
def test_quantize_drops_low_bits(n_bits):
    values = list(range(256))
    expected = [v // 2 ** (8 - n_bits) for v in values]
    as_tensor = quantize(torch.tensor(values, dtype=torch.uint8), n_bits)
    assert as_tensor.dtype == torch.uint8 and as_tensor.tolist() == expected
    assert quantize(np.array(values, np.uint8), n_bits).tolist() == expected


def test_quantize_from_two_bits():
    assert quantize(torch.tensor([0, 1, 2, 3], dtype=torch.uint8), 1, source_bits=2).tolist() == [0, 0, 1, 1]
    assert quantize(torch.tensor([0, 1, 2, 3], dtype=torch.uint8), 2, source_bits=2).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("n_bits", [0, 9, 2.5, True, "4"])
def test_quantize_rejects_bad_n_bits(n_bits):
    with pytest.raises(DatasetError, match=r"n_bits must be an integer from 1 to 8, found"):
        quantize(torch.zeros(3, dtype=torch.uint8), n_bits)


def test_quantize_rejects_n_bits_above_source_bits():
    with pytest.raises(DatasetError, match=r"n_bits must be an integer from 1 to 2, found 3"):
        quantize(torch.zeros(3, dtype=torch.uint8), 3, source_bits=2)


# --- MNIST / Fashion-MNIST (IDX) --------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_reads_exact_values(tmp_path, name, gz, split):
    images, labels = write_mnist(tmp_path, split, n=5, gz=gz)
    ds = load_dataset(name, split, root=tmp_path, download=False)
    assert isinstance(ds, ImageDataset) and len(ds) == 5
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (5, 1, 28, 28)
    assert ds.images.is_contiguous()
    assert ds.labels.dtype == torch.int64
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert ds.labels.tolist() == labels.tolist()
    assert (ds.n_bits, ds.n_classes, ds.image_shape, ds.name, ds.split) == (8, 10, (1, 28, 28), name, split)
    image, label = ds[3]
    assert image.shape == (1, 28, 28) and torch.equal(image[0], torch.from_numpy(images[3]))
    assert label == int(labels[3]) and isinstance(label, int)


def test_idx_mixed_gzip_and_raw(tmp_path):
    images, labels = write_mnist(tmp_path, "test", n=3, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    write_file(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(labels))
    ds = load_dataset("mnist", "test", root=tmp_path, download=False)
    assert ds.labels.tolist() == labels.tolist()


@pytest.mark.parametrize("n_bits", [1, 3, 5, 8])
def test_load_dataset_quantizes(tmp_path, n_bits):
    images, _ = write_mnist(tmp_path, "train", n=4)
    ds = load_dataset("mnist", root=tmp_path, n_bits=n_bits, download=False)
    assert ds.n_bits == n_bits
    assert np.array_equal(ds.images[:, 0].numpy(), images // 2 ** (8 - n_bits))
    assert int(ds.images.max()) < 2**n_bits


@pytest.mark.parametrize("n_bits", [0, 9])
def test_load_dataset_rejects_bad_n_bits(tmp_path, n_bits):
    write_mnist(tmp_path)
    with pytest.raises(PixelModelsError, match=rf"^--n-bits: expected an integer from 1 to 8 \(the dataset's n_bits\), "
                       rf"found {n_bits}$"):
        load_dataset("mnist", root=tmp_path, n_bits=n_bits, download=False)


def test_idx_wrong_magic(tmp_path):
    write_mnist(tmp_path)
    path = write_file(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 28, 28), np.uint8), 1234), gz=True)
    with pytest.raises(DatasetError, match=rf"{P(path)}.*expected magic number 2051, found 1234"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_idx_labels_file_in_place_of_images(tmp_path):
    write_mnist(tmp_path)
    path = write_file(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros(5, np.uint8)), gz=True)
    with pytest.raises(DatasetError, match=rf"{P(path)}.*expected magic number 2051, found 2049"):
        load_dataset("mnist", root=tmp_path, download=False)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated(tmp_path, gz):
    write_mnist(tmp_path, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    full = idx_bytes(np.ones((5, 28, 28), np.uint8))
    write_file(tmp_path / "train-images-idx3-ubyte", full[:-100], gz)
    expected, found = 16 + 5 * 28 * 28, 16 + 5 * 28 * 28 - 100
    with pytest.raises(DatasetError, match=rf"{P(tmp_path / name)}: truncated .*need {expected} bytes, found {found} bytes"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_idx_corrupt_gzip(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:12])
    with pytest.raises(DatasetError, match=rf"{P(path)}: cannot read"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_idx_count_mismatch(tmp_path):
    write_mnist(tmp_path, n=5)
    write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(4, np.uint8)), gz=True)
    images, labels = (tmp_path / f"{n}.gz" for n in IDX_NAMES["train"])
    with pytest.raises(DatasetError, match=rf"{P(images)} holds 5 images, {P(labels)} holds 4 labels"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_idx_bad_label(tmp_path):
    write_mnist(tmp_path, n=5)
    path = write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.array([1, 2, 10, 3, 4], np.uint8)), gz=True)
    with pytest.raises(DatasetError, match=rf"{P(path)}: expected labels 0..9, found 10 at index 2"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_idx_wrong_image_size(tmp_path):
    write_mnist(tmp_path, n=2)
    path = write_file(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 27, 28), np.uint8)), gz=True)
    with pytest.raises(DatasetError, match=rf"{P(path)}: expected 28x28 images, found 27x28"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_cache_dir_is_searched(tmp_path):
    images, _ = write_mnist(tmp_path / "cache" / "mnist", "test", n=2)
    ds = load_dataset("mnist", "test", download=False)
    assert np.array_equal(ds.images[:, 0].numpy(), images)


@pytest.mark.skipif(not REAL_FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": (REAL_FASHION.parent,)})
    ds = load_dataset("fashion-mnist", "test", download=False)
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert sorted(ds.labels.unique().tolist()) == list(range(10))
    assert torch.bincount(ds.labels).tolist() == [1000] * 10


# --- CIFAR-10 ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["folder", "folder-as-root", "tarball", "tarball-as-root"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_reads_nchw(tmp_path, layout, split):
    expected = write_cifar(tmp_path, as_tarball=layout.startswith("tarball"),
                           bytes_keys=layout != "tarball", protocol=2 if split == "train" else 4)
    root = {"folder": tmp_path, "folder-as-root": tmp_path / "cifar-10-batches-py",
            "tarball": tmp_path, "tarball-as-root": tmp_path / "cifar-10-python.tar.gz"}[layout]
    ds = load_dataset("cifar10", split, root=root, download=False)
    data, labels = expected[split]
    assert ds.images.shape == (len(data), 3, 32, 32) and ds.images.dtype == torch.uint8
    assert (ds.n_classes, ds.n_bits, ds.image_shape) == (10, 8, (3, 32, 32))
    assert ds.labels.tolist() == labels.tolist()
    # Row k of a batch is the R plane, then G, then B, each row-major.
    for k, c, i, j in [(0, 0, 0, 0), (1, 1, 5, 7), (len(data) - 1, 2, 31, 30), (0, 2, 0, 1)]:
        assert ds.images[k, c, i, j] == data[k, c * 1024 + i * 32 + j]
    assert np.array_equal(ds.images.reshape(len(data), -1).numpy(), data)


def py2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the published files were: Python 2 cPickle, protocol 2,
    numpy.core names and byte strings (opcodes written out by hand)."""
    (n, d), raw = data.shape, data.tobytes()
    return (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02"
            b"cnumpy\nndarray\nq\x03K\x00\x85U\x01b\x87Rq\x04(K\x01"
            b"J" + n.to_bytes(4, "little") + b"M" + d.to_bytes(2, "little") + b"\x86"
            b"cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06"
            b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            b"\x89T" + len(raw).to_bytes(4, "little") + raw + b"tbU\x06labelsq\x07]q\x08("
            + b"".join(b"K" + bytes([label]) for label in labels) + b"eu.")


def test_cifar_python2_pickle(tmp_path):
    write_cifar(tmp_path, as_tarball=False)
    data = np.random.default_rng(5).integers(0, 256, (2, 3072), dtype=np.uint8)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(py2_cifar_batch(data, [3, 7]))
    ds = load_dataset("cifar10", "test", root=tmp_path, download=False)
    assert np.array_equal(ds.images.numpy(), data.reshape(2, 3, 32, 32))
    assert ds.labels.tolist() == [3, 7]


def test_cifar_bad_label(tmp_path):
    write_cifar(tmp_path, as_tarball=False)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}))
    with pytest.raises(DatasetError, match=rf"{P(path)}: expected labels 0..9, found 10 at index 1"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)


def test_cifar_wrong_shape(tmp_path):
    write_cifar(tmp_path, as_tarball=False)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({"data": np.zeros((2, 3000), np.uint8), "labels": [1, 2]}))
    with pytest.raises(DatasetError, match=rf"{P(path)}: expected 'data' as a uint8 array \(N, 3072\), found uint8 array \(2, 3000\)"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)


def test_cifar_tarball_missing_member(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        data = cifar_batch(2, 0, True, 2)[0]
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetError, match=r"cifar-10-python.tar.gz: expected the CIFAR-10 batches .* no member named data_batch_2"):
        load_dataset("cifar10", "train", root=tmp_path, download=False)


@pytest.mark.parametrize("payload", [CreatesFile, RunsShell])
def test_cifar_malicious_pickle_is_refused(tmp_path, payload):
    write_cifar(tmp_path, as_tarball=False)
    victim = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    evil = pickle.dumps({b"data": payload(victim), b"labels": []}, protocol=2)
    path.write_bytes(evil)
    with pytest.raises(DatasetError, match=rf"{P(path)}: refusing to load this pickle: it refers to \w+\.(open|system)"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)
    assert not victim.exists()
    made = pickle.loads(evil)[b"data"]  # the payload is real: plain pickle does run it
    getattr(made, "close", lambda: None)()
    assert victim.exists()


# --- colored MNIST ----------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_colored_mnist_reads_nchw(tmp_path, split, protocol):
    content = write_colored(tmp_path / "mnist_colored.pkl", protocol=protocol)
    ds = load_dataset("colored-mnist", split, root=tmp_path, download=False)
    array = content[split]
    assert ds.images.shape == (len(array), 3, 28, 28) and ds.images.dtype == torch.uint8
    assert (ds.n_bits, ds.n_classes, ds.image_shape) == (2, None, (3, 28, 28))
    assert ds.labels.tolist() == [-1] * len(array) and ds[0][1] == -1
    assert ds.images[1, 2, 3, 4] == array[1, 3, 4, 2]
    assert np.array_equal(ds.images.numpy(), array.transpose(0, 3, 1, 2))


def test_colored_mnist_one_bit_and_pkl_as_root(tmp_path):
    content = write_colored(tmp_path / "homework" / "my_colors.pkl")
    ds = load_dataset("colored-mnist", "train", root=tmp_path / "homework" / "my_colors.pkl", n_bits=1)
    assert ds.n_bits == 1
    assert np.array_equal(ds.images.numpy(), content["train"].transpose(0, 3, 1, 2) // 2)


def test_colored_mnist_refuses_more_bits(tmp_path):
    write_colored(tmp_path / "mnist_colored.pkl")
    with pytest.raises(DatasetError, match=r"colored-mnist has 2 bits per channel; --n-bits 3 asked for more"):
        load_dataset("colored-mnist", root=tmp_path, n_bits=3, download=False)


def test_colored_mnist_values_above_3(tmp_path):
    path = tmp_path / "mnist_colored.pkl"
    write_colored(path, high=256, seed=1)
    with pytest.raises(DatasetError, match=rf"{P(path)}: expected 'train' values 0..3 \(2 bits per channel\), found values 0..255"):
        load_dataset("colored-mnist", root=tmp_path, download=False)


def test_colored_mnist_not_a_dict(tmp_path):
    path = tmp_path / "mnist_colored.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetError, match=rf"{P(path)}: expected a dict with keys 'train' and 'test', found list"):
        load_dataset("colored-mnist", root=tmp_path, download=False)


def test_colored_mnist_garbage(tmp_path):
    path = tmp_path / "mnist_colored.pkl"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(DatasetError, match=rf"{P(path)}: expected a pickle of numpy arrays, found unreadable data"):
        load_dataset("colored-mnist", root=tmp_path, download=False)


@pytest.mark.parametrize("payload", [CreatesFile, RunsShell])
def test_colored_mnist_malicious_pickle_is_refused(tmp_path, payload):
    victim = tmp_path / "pwned"
    path = tmp_path / "mnist_colored.pkl"
    path.write_bytes(pickle.dumps({"train": payload(victim), "test": np.zeros((1, 28, 28, 3), np.uint8)}))
    with pytest.raises(DatasetError, match=rf"{P(path)}: refusing to load this pickle"):
        load_dataset("colored-mnist", root=tmp_path, download=False)
    assert not victim.exists()


def test_colored_mnist_is_never_downloaded(tmp_path):
    with pytest.raises(DatasetError, match=r"put mnist_colored.pkl, from .*CS294-158.*rll/deepul.* not downloaded automatically"):
        load_dataset("colored-mnist", root=tmp_path)


# --- image folder -----------------------------------------------------------------------


def test_folder_png_and_jpeg_of_different_sizes(tmp_path):
    wide = np.zeros((4, 6, 3), np.uint8)  # height 4, width 6
    wide[:, 0] = wide[:, 5] = (255, 0, 0)  # cropped away
    wide[:, 1:5] = np.arange(4 * 4 * 3).reshape(4, 4, 3) * 5
    save_image(tmp_path / "a_wide.png", wide)
    tall = np.full((6, 4, 3), 7, np.uint8)
    tall[0] = tall[5] = 250  # cropped away
    save_image(tmp_path / "nested" / "deeper" / "b_tall.PNG", tall)
    save_image(tmp_path / "c_photo.JPEG", np.full((30, 40, 3), (200, 100, 50), np.uint8), quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    train, test = (load_dataset("folder", split, root=tmp_path, image_size=4) for split in ("train", "test"))
    assert (len(train), len(test)) == (2, 1)  # no train/ and test/: one image (10%, at least 1) held out
    images = {}
    for ds in (train, test):
        assert ds.images.dtype == torch.uint8 and (ds.n_classes, ds.n_bits, ds.image_shape) == (None, 8, (3, 4, 4))
        assert ds.labels.tolist() == [-1] * len(ds) and ds.facts.skipped == ["notes.txt"]
        assert ds.facts.held_out == (2, 1) and ds.facts.files == sorted(ds.facts.files)  # sorted by path
        images.update({path.relative_to(tmp_path).as_posix(): image.numpy() for path, image in
                       zip(ds.facts.files, ds.images)})
    assert sorted(images) == ["a_wide.png", "c_photo.JPEG", "nested/deeper/b_tall.PNG"]
    assert np.array_equal(images["a_wide.png"], wide[:, 1:5].transpose(2, 0, 1))
    photo = images["c_photo.JPEG"].astype(int)
    assert np.abs(photo - np.array([200, 100, 50])[:, None, None]).max() <= 4
    assert np.array_equal(images["nested/deeper/b_tall.PNG"], np.full((3, 4, 4), 7))


def test_folder_box_downscale_grayscale_and_bits(tmp_path):
    blocks = np.array([[10, 20, 100, 100], [30, 40, 100, 100], [0, 0, 255, 255], [0, 4, 255, 255]], np.uint8)
    save_image(tmp_path / "x.png", np.repeat(blocks[:, :, None], 3, axis=2))  # gray RGB: L is exact
    ds = load_dataset("folder", root=tmp_path, image_size=2, channels=1)
    assert ds.images.shape == (1, 1, 2, 2)
    assert ds.images[0, 0].tolist() == [[25, 100], [1, 255]]
    ds = load_dataset("folder", root=tmp_path, image_size=2, channels=1, n_bits=4)
    assert ds.images[0, 0].tolist() == [[1, 6], [0, 15]]


def test_folder_train_test_subfolders(tmp_path):
    for name, value in [("train/a.png", 1), ("train/b.jpg", 2), ("test/c.png", 3), ("other.png", 9)]:
        save_image(tmp_path / name, np.full((8, 8, 3), value * 20, np.uint8))
    train = load_dataset("folder", "train", root=tmp_path, image_size=8)
    test = load_dataset("folder", "test", root=tmp_path, image_size=8)
    assert len(train) == 2 and len(test) == 1
    assert test.images.flatten().tolist() == [60] * 3 * 64
    assert int(train.images[0, 0, 0, 0]) == 20


def test_folder_default_size_is_32(tmp_path):
    save_image(tmp_path / "a.png", np.full((50, 70, 3), 128, np.uint8))
    ds = load_dataset("folder", root=tmp_path)
    assert ds.images.shape == (1, 3, 32, 32) and ds.images.unique().tolist() == [128]


def test_folder_unreadable_image(tmp_path):
    save_image(tmp_path / "good.png", np.zeros((4, 4, 3), np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=rf"{P(bad)}: expected a readable PNG or JPEG image"):
        load_dataset("folder", root=tmp_path)


def test_folder_truncated_png(tmp_path):
    path = save_image(tmp_path / "cut.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match=rf"{P(path)}: expected a readable PNG or JPEG image"):
        load_dataset("folder", root=tmp_path)


def test_folder_empty(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=rf"{P(tmp_path)}: expected PNG or JPEG images .* found none"):
        load_dataset("folder", root=tmp_path)


def test_folder_needs_an_existing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"folder dataset needs root"):
        load_dataset("folder")
    with pytest.raises(DatasetError, match=rf"{P(tmp_path / 'nope')}: expected a folder"):
        load_dataset("folder", root=tmp_path / "nope")


def test_folder_rejects_bad_channels(tmp_path):
    with pytest.raises(PixelModelsError, match=r"^--channels: expected one of \[1, 3\], found 2$"):
        load_dataset("folder", root=tmp_path, channels=2)


# --- names, splits, missing files -------------------------------------------------------


def test_unknown_dataset():
    with pytest.raises(DatasetError, match=r"unknown dataset 'imagenet'; known datasets: arrays, cifar10, colored-mnist, fashion-mnist, folder, mnist"):
        load_dataset("imagenet")


def test_unknown_split(tmp_path):
    with pytest.raises(DatasetError, match=r"split must be one of train, test; found 'valid'"):
        load_dataset("mnist", "valid", root=tmp_path, download=False)


def test_size_options_only_for_folder(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(DatasetError, match=r"image_size applies to the folder dataset only: mnist has image_size 28"):
        load_dataset("mnist", root=tmp_path, image_size=32, download=False)
    assert len(load_dataset("mnist", root=tmp_path, image_size=28, channels=1, download=False)) == 5


@pytest.mark.parametrize("name, split, needed", [
    ("mnist", "train", r"put train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz \(gzipped or not\)"),
    ("mnist", "test", r"put t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"),
    ("fashion-mnist", "test", r"put t10k-images-idx3-ubyte.gz .*apt-get install dataset-fashion-mnist"),
    ("cifar10", "train", r"put cifar-10-python.tar.gz \(or its extracted cifar-10-batches-py/ with data_batch_1"),
])
def test_missing_files_message(tmp_path, name, split, needed):
    with pytest.raises(DatasetError, match=rf"{name} {split} split not found: {needed}") as error:
        load_dataset(name, split, root=tmp_path, download=False)
    assert f") in {tmp_path}" in str(error.value) and "downloads are off (download=False)" in str(error.value)


def test_missing_files_message_names_the_cache(tmp_path):
    with pytest.raises(DatasetError, match=rf"in {P(tmp_path / 'cache' / 'mnist')}"):
        load_dataset("mnist", download=False)


# --- downloads (served from memory) -----------------------------------------------------


def serve(monkeypatch, payloads: dict[str, bytes]) -> list[str]:
    """Make urlopen answer the URLs of ``payloads``; return the list of URLs asked for."""
    asked = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        assert timeout == 10
        if url not in payloads:
            raise urllib.error.URLError("no route to host")
        return io.BytesIO(payloads[url])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return asked


def mnist_test_payloads(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9], np.uint8)
    return images, labels, [gzip.compress(idx_bytes(images)), gzip.compress(idx_bytes(labels))]


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    _, _, payloads = mnist_test_payloads()
    remotes = locate.REMOTES["mnist"]["test"]
    serve(monkeypatch, {r.url: p for r, p in zip(remotes, payloads)})
    found = hashlib.md5(payloads[0]).hexdigest()
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match=rf"download of {P(remotes[0].url)} is corrupt: expected MD5 {P(remotes[0].md5)}, found {found}"):
        load_dataset("mnist", "test", root=root)
    assert list(root.iterdir()) == []


def test_download_with_correct_checksum(tmp_path, monkeypatch):
    images, labels, payloads = mnist_test_payloads()
    remotes = tuple(locate.Remote(r.filename, r.url, hashlib.md5(p).hexdigest())
                    for r, p in zip(locate.REMOTES["mnist"]["test"], payloads))
    monkeypatch.setitem(locate.REMOTES["mnist"], "test", remotes)
    asked = serve(monkeypatch, {r.url: p for r, p in zip(remotes, payloads)})
    ds = load_dataset("mnist", "test")  # no root: into the cache
    assert asked == [r.url for r in remotes]
    assert asked[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz"
    assert np.array_equal(ds.images[:, 0].numpy(), images) and ds.labels.tolist() == [7, 0, 9]
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    asked.clear()
    load_dataset("mnist", "test")
    assert asked == []  # found in the cache this time


def test_download_network_failure_falls_through(tmp_path, monkeypatch):
    asked = serve(monkeypatch, {})
    with pytest.raises(DatasetError, match=r"fashion-mnist train split not found: put train-images-idx3-ubyte.gz .*downloading http://fashion-mnist\S+ failed .*no route to host"):
        load_dataset("fashion-mnist", "train", root=tmp_path)
    assert len(asked) == 1 and list(tmp_path.iterdir()) == []


def test_no_download_environment_variable(tmp_path, monkeypatch):
    asked = serve(monkeypatch, {})
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    with pytest.raises(DatasetError, match=r"PIXELMODELS_NO_DOWNLOAD is set"):
        load_dataset("cifar10", root=tmp_path)
    assert asked == []


# --- ImageDataset -----------------------------------------------------------------------


def test_image_dataset_with_dataloader(tmp_path):
    images, labels = write_mnist(tmp_path, n=5)
    ds = load_dataset("mnist", root=tmp_path, download=False)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert y.tolist() == labels[:4].tolist()


def test_image_dataset_checks_its_values():
    with pytest.raises(DatasetError, match=r"expected values below 2\*\*2, found 4"):
        ImageDataset(torch.full((1, 1, 2, 2), 4, dtype=torch.uint8), torch.zeros(1), n_bits=2)
    with pytest.raises(DatasetError, match=r"expected uint8 images"):
        ImageDataset(np.zeros((1, 1, 2, 2), np.int64), np.zeros(1), n_bits=2)


def test_load_dataset_takes_the_folder_as_data_dir_like_the_flag(tmp_path):
    write_mnist(tmp_path)
    by_flag_name = load_dataset("mnist", "train", data_dir=tmp_path, download=False)
    assert by_flag_name.images.equal(load_dataset("mnist", "train", root=tmp_path, download=False).images)
    with pytest.raises(DatasetError, match=r"^root / data_dir: the same folder under two names; give one"):
        load_dataset("mnist", "train", root=tmp_path, data_dir=tmp_path, download=False)
