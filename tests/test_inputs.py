"""One way in: every command that reads images (train, evaluate, score, compress, complete) reads image files
through one reader, with the same conversions (EXIF, alpha, grayscale <-> RGB, 16 bits, crop and resize) and
refusals, says what it read in one line, and a folder without train/ and test/ holds out a fixed test split.

Files are written here in the real formats: PNG 8-bit gray / RGB / RGBA, PNG 16-bit (gray by Pillow; RGB,
RGBA and gray+alpha by a minimal PNG writer, as Pillow does not write them), JPEG, and text files."""

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import pixelmodels
import pixelmodels.pretrained
from pixelmodels.app.cli import main
from pixelmodels.app.inputs import inputs_for, read_inputs, read_line, splits_line
from pixelmodels.data import load_dataset
from pixelmodels.data.folder import ReadFacts, eight_bit, load_image
from pixelmodels.errors import DatasetError

RNG = np.random.default_rng(0)


def png(path, array, **kw):
    """An 8-bit PNG (or a 16-bit grayscale one, from uint16) written by Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def png16(path, array):
    """A 16-bit PNG of a uint16 array (H, W, C), C = 2 (gray+alpha), 3 (RGB) or 4 (RGBA), in the PNG format."""
    h, w, c = array.shape
    raw = b"".join(b"\x00" + array[i].astype(">u2").tobytes() for i in range(h))  # filter 0 per row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def export(tmp_path, name="model", **kw):
    """A tiny untrained gated PixelCNN written by save_pretrained."""
    kw = {"image_shape": (1, 8, 8), "preset": "tiny", **kw}
    torch.manual_seed(1)
    model = pixelmodels.create_model("gated-pixelcnn", **kw).eval()
    return pixelmodels.save_pretrained(model, tmp_path / name), model


def bpd(model, images, y=None):
    with torch.no_grad():
        return model.bits_per_dim(images, y)


def read_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) >= 1
    return err.strip().splitlines()[-1]


# --- 16 bits -------------------------------------------------------------------------------------------


WIDE = np.array([[0, 255, 256, 65535], [4660, 32768, 100, 65280], [511, 512, 1, 40000], [9, 8, 7, 6]], np.uint16)


def test_16_bit_pngs_become_v_shifted_by_8_in_every_reader(tmp_path):
    gray = png(tmp_path / "train" / "gray16.png", WIDE)  # Pillow: mode I;16
    rgb = png16(tmp_path / "train" / "rgb16.png", np.stack([WIDE, 65535 - WIDE, WIDE // 3], -1))
    rgba = png16(tmp_path / "test" / "rgba16.png", np.stack([WIDE, WIDE // 2, WIDE // 5, 65535 - WIDE], -1))
    gray_alpha = png16(tmp_path / "test" / "la16.png", np.stack([WIDE, WIDE], -1))
    assert Image.open(gray).mode == "I;16"
    eight = {gray: WIDE[..., None] >> 8, rgb: np.stack([WIDE, 65535 - WIDE, WIDE // 3], -1) >> 8,
             rgba: np.stack([WIDE, WIDE // 2, WIDE // 5], -1) >> 8, gray_alpha: WIDE[..., None] >> 8}

    def expected(path, channels):  # (C, 4, 4): the 8-bit values, then the channels as for any 8-bit file
        values = eight[path].astype(np.uint8)
        if values.shape[-1] == channels:
            return values.transpose(2, 0, 1)
        if channels == 3:
            return np.repeat(values.transpose(2, 0, 1), 3, axis=0)
        return np.asarray(Image.fromarray(values).convert("L"))[None]

    for channels in (1, 3):
        train, test = (load_dataset("folder", split, root=tmp_path, image_size=4, channels=channels)
                       for split in ("train", "test"))
        for ds in (train, test):
            for path, image in zip(ds.facts.files, ds.images):
                assert image.numpy().tolist() == expected(path, channels).tolist(), path.name
                again = read_inputs([path], (channels, 4, 4), 8, resize=True).images[0]  # score's reader
                assert torch.equal(again, image), path.name
        assert train.facts.converted == {"16-bit grayscale": 1, "16-bit RGB": 1}
        assert test.facts.converted == {"16-bit RGBA": 1, "16-bit grayscale+alpha": 1}
    assert int(train.images.float().mean()) < 200  # not the almost white 8..255 a clipping conversion gives


def test_16_bit_modes_pillow_does_not_write(tmp_path):
    big_endian = Image.frombytes("I;16B", (4, 4), WIDE.astype(">u2").tobytes())
    assert np.asarray(eight_bit(big_endian, "x")).tolist() == (WIDE >> 8).tolist()
    wide_int = Image.fromarray(WIDE.astype(np.int32))
    assert wide_int.mode == "I" and np.asarray(eight_bit(wide_int, "x")).tolist() == (WIDE >> 8).tolist()
    with pytest.raises(DatasetError, match=r"^x: expected 16-bit values 0..65535, found 0..70000"):
        eight_bit(Image.fromarray(np.array([[0, 70000]], np.int32)), "x")


def test_a_16_bit_file_scores_as_its_8_bit_values(tmp_path, capsys):
    model_dir, model = export(tmp_path, image_shape=(1, 4, 4))
    path = png(tmp_path / "wide.png", WIDE)
    out = tmp_path / "s.csv"
    assert main(["score", str(model_dir), str(path), "--out", str(out)]) == 0
    direct = bpd(model, torch.from_numpy((WIDE >> 8).astype(np.uint8))[None, None]).item()
    assert float(out.read_text().splitlines()[1].split(",")[3]) == pytest.approx(direct, rel=1e-5)
    assert "converted 1 16-bit grayscale" in capsys.readouterr().err


# --- the same conversions for every reader ----------------------------------------------------------


def mixed_folder(root):
    """RGBA, grayscale, RGB (EXIF: upside down), a JPEG, a README.md and a notes.txt, 6x6 except the JPEG."""
    rgba = RNG.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    gray = RNG.integers(0, 256, (6, 6), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180 degrees
    png(root / "a_rgba.png", rgba)
    png(root / "b_gray.png", gray)
    png(root / "c_upside_down.png", rgb, exif=exif)
    png(root / "d_photo.jpg", np.full((9, 12, 3), (200, 100, 50), np.uint8), quality=95)
    (root / "README.md").write_text("# my photos")
    (root / "notes.txt").write_text("notes")
    (root / "._a_rgba.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata")  # hidden: never read
    return rgba, gray, rgb


def test_one_reader_for_folders_and_files(tmp_path):
    rgba, gray, rgb = mixed_folder(tmp_path / "photos")
    files = read_inputs([tmp_path / "photos"], (3, 6, 6), 8, resize=True)
    assert [s.rsplit("/", 1)[-1] for s in files.sources] == ["a_rgba.png", "b_gray.png", "c_upside_down.png",
                                                              "d_photo.jpg"]
    x = files.images.numpy()
    assert np.array_equal(x[0], rgba[..., :3].transpose(2, 0, 1))  # alpha dropped
    assert np.array_equal(x[1], np.stack([gray] * 3))  # gray: three equal channels
    assert np.array_equal(x[2], rgb[::-1, ::-1].transpose(2, 0, 1))  # upright
    assert np.abs(x[3].astype(int) - np.array([200, 100, 50])[:, None, None]).max() <= 4  # cropped, resized
    (_, _, facts), = files.parts
    assert facts.skipped == ["._a_rgba.png", "README.md", "notes.txt"]
    assert facts.converted == {"RGBA": 1, "grayscale": 1} and facts.resized == {"9x12": 1}

    train, test = (load_dataset("folder", split, root=tmp_path / "photos", image_size=6) for split in ("train", "test"))
    by_file = {str(p): image for ds in (train, test) for p, image in zip(ds.facts.files, ds.images)}
    assert sorted(by_file) == files.sources
    for source, image in zip(files.sources, files.images):
        assert torch.equal(by_file[source], image), source  # train reads the pixels score reads

    gray_files = read_inputs([tmp_path / "photos"], (1, 6, 6), 8, resize=True).images.numpy()
    luma = np.asarray(Image.fromarray(rgb[::-1, ::-1]).convert("L"))
    assert np.array_equal(gray_files[1, 0], gray) and np.array_equal(gray_files[2, 0], luma)


def test_the_report_line_and_its_plurals(tmp_path):
    mixed_folder(tmp_path / "photos")
    one = png(tmp_path / "one.png", np.zeros((6, 6, 3), np.uint8))
    model = pixelmodels.create_model("gated-pixelcnn", image_shape=(3, 6, 6), preset="tiny")
    inputs = inputs_for(model, None, [tmp_path / "photos", one], resize=True)
    assert read_line(inputs.parts, model) == (
        f"read 5 images from {tmp_path / 'photos'} and {one} (RGB 6x6); skipped 3 files that are not images "
        "(._a_rgba.png, README.md, notes.txt); converted 1 RGBA and 1 grayscale; cropped and resized 1 image "
        "(1 of 9x12)")
    facts = ReadFacts("x", skipped=["README.md"])
    assert read_line([("x", 1, facts)], model) == ("read 1 image from x (RGB 6x6); skipped 1 file that is not an "
                                                   "image (README.md)")
    many = ReadFacts("x", skipped=[f"{k}.txt" for k in range(7)])
    assert read_line([("x", 2, many)], model).endswith("skipped 7 files that are not images (0.txt, 1.txt, 2.txt, "
                                                       "3.txt, 4.txt and 2 more)")


# --- training: the report, the held-out split, an absolute --data-dir ------------------------------------


def photos(root, n, size=8):
    for k in range(n):
        png(root / f"img{k:02d}.png", RNG.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


TRAIN = ["--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "folder", "--image-size", "8",
         "--batch-size", "8", "--max-steps", "1", "--n-samples", "0", "--no-progress"]


def test_a_flat_folder_holds_out_a_fixed_test_split(tmp_path):
    root = photos(tmp_path / "flat", 25)
    train, test = (load_dataset("folder", split, root=root, image_size=8) for split in ("train", "test"))
    assert (len(train), len(test)) == (23, 2)  # 10% of 25, rounded
    names = [{p.name for p in ds.facts.files} for ds in (train, test)]
    assert not names[0] & names[1] and len(names[0] | names[1]) == 25
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "copy")  # the same files anywhere: the same split
    assert {p.name for p in load_dataset("folder", "test", root=moved, image_size=8).facts.files} == names[1]
    assert train.facts.held_out == test.facts.held_out == (23, 2)
    tiny = photos(tmp_path / "three", 3)
    assert [len(load_dataset("folder", s, root=tiny, image_size=8)) for s in ("train", "test")] == [2, 1]


def test_what_train_read_in_one_line(tmp_path):
    root = photos(tmp_path / "photos", 20)
    (root / "README.md").write_text("about")
    png(root / "gray.png", RNG.integers(0, 256, (10, 8), dtype=np.uint8))
    train, test = (load_dataset("folder", split, root=root, image_size=8) for split in ("train", "test"))
    assert splits_line(train, test) == (
        f"read 21 images from {root} (RGB 8x8): 19 train, 2 test (10% held out for test, the same every run: "
        f"{root} has no train/ and test/ subfolders); skipped 1 file that is not an image (README.md); "
        "converted 1 grayscale; cropped and resized 1 image (1 of 10x8)")
    photos(tmp_path / "data" / "train", 9)
    photos(tmp_path / "data" / "test", 1)
    (tmp_path / "data" / "test" / "notes.txt").write_text("x")
    train, test = (load_dataset("folder", split, root=tmp_path / "data", image_size=8) for split in ("train", "test"))
    assert splits_line(train, test) == (f"read 10 images from {tmp_path / 'data'} (RGB 8x8): 9 train, 1 test; "
                                        "skipped 1 file that is not an image (test/notes.txt)")


def test_a_run_on_a_flat_folder_evaluates_held_out_images_only(tmp_path, capsys):
    root = photos(tmp_path / "photos", 20)
    run = tmp_path / "run"
    assert main(["train", *TRAIN, "--data-dir", str(root), "--out", str(run)]) == 0
    test = load_dataset("folder", "test", root=root, image_size=8)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    captured = capsys.readouterr()
    result = json.loads((run / "evaluation_test.json").read_text())
    direct = bpd(pixelmodels.load(run), test.images).mean().item()
    assert result["n_images"] == 2 and result["bits_per_dim"] == pytest.approx(direct, rel=1e-5)
    assert f"test bits/dim: {direct:.4f} (2 images, EMA weights)" in captured.out
    assert f"read 2 images from {root}:test (RGB 8x8): 10% held out for test" in captured.err


def test_training_on_one_image_is_refused(tmp_path, capsys):
    root = photos(tmp_path / "single", 1)
    assert main(["train", *TRAIN, "--data-dir", str(root), "--out", str(tmp_path / "run")]) == 2
    assert read_error(capsys) == (f"pixelmodels train: error: {root}: expected at least 2 images, to hold out 10% "
                                  f"for a test split (there are no train/ and test/ subfolders), found 1 "
                                  f"({root / 'img00.png'})")
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_relative_data_dir_is_stored_absolute(tmp_path, monkeypatch, capsys):
    photos(tmp_path / "work" / "photos", 10)
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", *TRAIN, "--data-dir", "photos", "--out", "runs/photos"]) == 0
    config = json.loads((tmp_path / "work" / "runs" / "photos" / "config.json").read_text())
    assert config["data"]["data_dir"] == str(tmp_path / "work" / "photos")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "work" / "runs" / "photos")]) == 0
    assert "test bits/dim" in capsys.readouterr().out


# --- evaluate, complete, compress: files, --label, --resize -----------------------------------------------


def grays(root, n, shape=(8, 8)):
    arrays = RNG.integers(0, 256, (n, *shape), dtype=np.uint8)
    for k, a in enumerate(arrays):
        png(root / f"g{k}.png", a)
    return arrays


def test_evaluate_image_files_and_arrays_files(tmp_path, capsys):
    model_dir, model = export(tmp_path, n_classes=3)
    arrays = grays(tmp_path / "gray", 3)
    assert main(["evaluate", str(model_dir), str(tmp_path / "gray")]) == 2
    assert "--label: the model is conditional on 3 classes and image files have no labels" in read_error(capsys)
    assert main(["evaluate", str(model_dir), str(tmp_path / "gray"), "--label", "2"]) == 0
    direct = bpd(model, torch.from_numpy(arrays[:, None]), 2).mean().item()
    assert f"bits/dim: {direct:.4f} (3 images, EMA weights)" in capsys.readouterr().out
    assert not (model_dir / "evaluation_test.json").exists()  # files are not a split

    np.savez(tmp_path / "mine.npz", x=arrays, y=np.array([0, 1, 2]))
    np.save(tmp_path / "plain.npy", arrays[:2])
    assert main(["evaluate", str(model_dir), str(tmp_path / "mine.npz")]) == 0
    direct = bpd(model, torch.from_numpy(arrays[:, None]), torch.tensor([0, 1, 2])).mean().item()
    captured = capsys.readouterr()
    assert f"bits/dim: {direct:.4f} (3 images" in captured.out
    assert f"read 3 images from {tmp_path / 'mine.npz'} (grayscale 8x8)" in captured.err
    assert main(["evaluate", str(model_dir), str(tmp_path / "plain.npy"), "--label", "1"]) == 0
    assert f"{bpd(model, torch.from_numpy(arrays[:2, None]), 1).mean().item():.4f}" in capsys.readouterr().out


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A registry of shipped models holding 'tiny-fmnist', conditional on 10 classes, trained on fashion-mnist."""
    root = tmp_path / "shipped"
    model_dir, model = export(root, "tiny-fmnist", image_shape=(1, 28, 28), n_classes=10)
    (model_dir / "metadata.json").write_text(json.dumps({"dataset": "fashion-mnist"}))
    monkeypatch.setattr(pixelmodels.pretrained, "ROOT", root)
    return model


def test_complete_takes_image_files_and_a_label(tmp_path, shipped, capsys, monkeypatch):
    arrays = grays(tmp_path / "gray", 3, (28, 28))
    monkeypatch.chdir(tmp_path)
    assert main(["complete", "--pretrained", "tiny-fmnist", "--dataset", "folder", "--data-dir", "gray"]) == 2
    assert read_error(capsys) == ("pixelmodels complete: error: --label: the model is conditional on 10 classes and "
                                  "folder has no labels; give --label K")
    assert main(["complete", "--pretrained", "tiny-fmnist", "--dataset", "folder", "--data-dir", "gray",
                 "--label", "3", "--rows", "27"]) == 0  # the reported command, with a label: the held-out image
    held_out = load_dataset("folder", "test", root=tmp_path / "gray", image_size=28, channels=1).images
    done = np.load(tmp_path / "completions.npz")
    assert np.array_equal(done["originals"][..., 0], held_out[:, 0].numpy())

    out = tmp_path / "files.png"
    assert main(["complete", "--pretrained", "tiny-fmnist", "gray", "--label", "3", "--rows", "27",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "read 3 images from gray (grayscale 28x28)" in err
    done = np.load(out.with_suffix(".npz"))
    assert np.array_equal(done["originals"][..., 0], arrays) and done["completions"].shape == (3, 28, 28, 1)
    assert np.array_equal(done["completions"][:, :27, :, 0], arrays[:, :27])
    assert main(["complete", "--pretrained", "tiny-fmnist", "gray", "--label", "3", "--n", "2", "--out",
                 str(out), "--overwrite"]) == 0
    assert np.load(out.with_suffix(".npz"))["originals"].shape[0] == 2
    assert main(["complete", "--pretrained", "tiny-fmnist", "gray", "--label", "3", "--n", "5", "--out", "n.png"]) == 2
    assert "--n: expected 1 to 3 images" in read_error(capsys)
    assert main(["complete", "--pretrained", "tiny-fmnist", "gray", "--label", "10", "--out", "n.png"]) == 2
    assert "--label: expected a class 0..9, found 10" in read_error(capsys)


def test_compress_resize_and_every_verb_names_a_file_of_another_shape(tmp_path, capsys):
    model_dir, model = export(tmp_path)
    big = png(tmp_path / "big.png", RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    for argv in (["score"], ["evaluate"], ["complete"], ["compress", "-o", str(tmp_path / "x.pmc")]):
        assert main([argv[0], str(model_dir), str(big), *argv[1:]]) == 2
        assert read_error(capsys) == (f"pixelmodels {argv[0]}: error: {big}: expected an image of shape (1, 8, 8) "
                                      "(grayscale 8x8), found (3, 12, 10) (RGB 12x10); --resize (resize=True) "
                                      "converts and resizes it")
    stream, back = tmp_path / "big.pmc", tmp_path / "back.npz"
    assert main(["compress", str(model_dir), str(big), "--resize", "-o", str(stream)]) == 0
    assert "cropped and resized 1 image (1 of 12x10)" in capsys.readouterr().err
    assert main(["decompress", str(model_dir), str(stream), "-o", str(back)]) == 0
    decoded = np.load(back)["images"].reshape(8, 8)
    assert np.array_equal(decoded, load_image(big, 8, 1)[0])  # the one reader's crop and resize


@pytest.mark.parametrize("name,content,message", [
    ("README.md", b"# hello", "expected a PNG or JPEG image (.png, .jpg, .jpeg), an arrays file (.npz, .npy) or a "
                              "folder, found a .md file"),
    ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "expected a readable PNG or JPEG image, found unreadable data"),
    ("missing.png", None, "no such image file or folder"),
])
def test_bad_input_files_are_one_line_naming_them(tmp_path, capsys, name, content, message):
    model_dir, _ = export(tmp_path)
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    for verb in ("score", "evaluate", "complete"):
        assert main([verb, str(model_dir), str(path)]) == 2
        line = read_error(capsys)
        assert line.startswith(f"pixelmodels {verb}: error: {path}: ") and message in line
