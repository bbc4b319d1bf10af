"""The one writer (pixelmodels.app.outputs): every command that writes checks its output before any work,
refuses an existing one without --overwrite, takes the format from the extension, writes atomically and
says what it wrote; decompress gives image files back under their names; heat maps show the image beside
its map with a scale."""

import errno
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import pixelmodels
from pixelmodels.app import reports
from pixelmodels.app.cli import main
from pixelmodels.app.outputs import plural, write_folder
from pixelmodels.imageio import GRID_FORMATS, display_scale, enlarge, make_grid
from pixelmodels.vqvae import VQVAE

SHAPE = (1, 8, 8)


def tiny(tmp_path, name="model", **kw):
    """A tiny untrained gated PixelCNN of 8x8 grayscale images (or of code maps), saved with save_pretrained."""
    torch.manual_seed(1)
    model = pixelmodels.create_model("gated-pixelcnn", **{"image_shape": SHAPE, "preset": "tiny", **kw}).eval()
    return pixelmodels.save_pretrained(model, tmp_path / name), model


def error(capsys) -> str:
    """The one error line a refused command printed (after what it read and its progress bars)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def never(*args, **kwargs):
    raise AssertionError("the work ran before the output was checked")


def write_pngs(root, names, seed=0, shape=(8, 8)):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        arrays[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(arrays[name]).save(root / name)
    return arrays


@pytest.fixture
def codes_data(tmp_path, monkeypatch):
    """An arrays dataset of 7x7 maps of 16 codes."""
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    folder = tmp_path / "codes"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        np.savez(folder / f"{split}.npz", x=rng.integers(0, 16, (4, 7, 7)).astype(np.int16), n_codes=16)
    return folder


def vqvae_beside(folder):
    torch.manual_seed(0)
    vqvae = VQVAE(n_codes=16, dim=8, hidden=12).eval()
    vqvae.save(folder)
    return vqvae


def test_plural():
    assert [plural(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]


# -- before any work -----------------------------------------------------------------------------------------
def test_generate_checks_its_output_before_sampling(tmp_path, capsys, monkeypatch):
    folder, _ = tiny(tmp_path)
    monkeypatch.setattr("pixelmodels.app.samples.generate_samples", never)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "taken.png").write_bytes(b"old")
    (tmp_path / "dir.png").mkdir()
    cases = [
        ("/proc/x.png", "--out: /proc/x.png: cannot write in /proc"),
        (tmp_path / "file.txt" / "x.png", f"x.png: cannot make the folder {tmp_path / 'file.txt'}: "
                                          f"{tmp_path / 'file.txt'} is a file"),
        (tmp_path / "x.jpg", f"--out: {tmp_path / 'x.jpg'}: cannot write a .jpg file; expected a path ending in "
                             ".png, .webp, .tif, .tiff, .bmp or .npz"),
        (tmp_path / "x", "cannot write a path without an extension; expected a path ending in .png"),
        (tmp_path / "taken.png", f"--out: {tmp_path / 'taken.png'} exists; give --overwrite to replace it"),
        (tmp_path / "dir.png", f"--out: {tmp_path / 'dir.png'} is a folder; expected a file path"),
    ]
    for out, message in cases:
        assert main(["generate", str(folder), "--n", "1", "--out", str(out)]) == 2, out
        assert message in error(capsys)
    assert (tmp_path / "taken.png").read_bytes() == b"old"


def test_complete_score_compress_decompress_and_train_check_before_their_work(tmp_path, capsys, monkeypatch):
    folder, _ = tiny(tmp_path)
    image = tmp_path / "in" / "a.png"
    write_pngs(tmp_path / "in", ["a.png"])
    monkeypatch.setattr("pixelmodels.app.samples.complete_examples", never)
    monkeypatch.setattr("pixelmodels.scoring.score", never)
    monkeypatch.setattr("pixelmodels.app.compression_files.compress", never)
    monkeypatch.setattr("pixelmodels.app.compression_files.decompress", never)
    monkeypatch.setattr("pixelmodels.app.compression_files.read_stream", never)
    monkeypatch.setattr("pixelmodels.app.runs.setup_process", never)
    (tmp_path / "maps").write_text("a file")
    (tmp_path / "run.txt").write_text("a file")
    (tmp_path / "old").mkdir()
    cases = [
        (["complete", str(folder), "--dataset", "arrays", "--out", "/proc/c.png"],
         "--out: /proc/c.png: cannot write in /proc"),
        (["score", str(folder), str(image), "--out", "/proc/s.csv"], "--out: /proc/s.csv: cannot write in /proc"),
        (["score", str(folder), str(image), "--out", str(tmp_path / "s.txt")],
         "cannot write a .txt file; expected a path ending in .csv"),
        (["score", str(folder), str(image), "--heatmap", str(tmp_path / "maps")],
         f"--heatmap: {tmp_path / 'maps'} is a file; expected a folder"),
        (["score", str(folder), str(image), "--heatmap", "/proc/maps"], "--heatmap: /proc/maps: cannot write in /proc"),
        (["compress", str(folder), str(image), "-o", "/proc/a.pmc"], "-o: /proc/a.pmc: cannot write in /proc"),
        (["compress", str(folder), str(image), "-o", str(tmp_path / "a.zip")],
         "cannot write a .zip file; expected a path ending in .pmc"),
        (["decompress", str(folder), str(tmp_path / "a.pmc"), "-o", "/proc/out"],
         "-o: /proc/out: cannot write in /proc"),
        (["decompress", str(folder), str(tmp_path / "a.pmc"), "-o", str(tmp_path / "out.png")],
         "cannot write a .png file; expected a folder (for PNG files) or a path ending in .npz"),
        (["decompress", str(folder), str(tmp_path / "a.pmc"), "-o", str(tmp_path / "old")],
         f"-o: {tmp_path / 'old'} exists; give --overwrite"),
        (["train", "--model", "pixelcnn", "--dataset", "mnist", "--out", "/proc/run"],
         "--out: /proc/run: cannot write in /proc"),
        (["train", "--model", "pixelcnn", "--dataset", "mnist", "--out", str(tmp_path / "run.txt")],
         f"--out: {tmp_path / 'run.txt'} is a file; expected a folder for the run"),
    ]
    # complete reads its dataset before the check (it needs the model's data); give it one
    (tmp_path / "arrays").mkdir()
    np.savez(tmp_path / "arrays" / "test.npz", x=np.zeros((2, 8, 8), np.uint8))
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    for argv, message in cases:
        if argv[0] == "complete":
            argv = argv + ["--data-dir", str(tmp_path / "arrays")]
        assert main(argv) == 2, argv
        assert message in error(capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays", "in", "maps", "model", "old", "run.txt"]


# -- existing outputs and --overwrite ------------------------------------------------------------------------
def test_generate_and_complete_refuse_every_existing_file_without_overwrite(tmp_path, capsys):
    folder, _ = tiny(tmp_path)
    out = tmp_path / "g.png"
    assert main(["generate", str(folder), "--n", "2", "--seed", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (f"wrote {out} and {out.with_suffix('.npz')} (2 images 8x8, values "
                                               "0..255)")
    before = out.read_bytes(), out.with_suffix(".npz").read_bytes()
    assert main(["generate", str(folder), "--n", "2", "--seed", "2", "--out", str(out)]) == 2
    assert f"{out} and {out.with_suffix('.npz')} exist; give --overwrite to replace them" in error(capsys)
    out.unlink()  # the .npz beside alone counts too
    assert main(["generate", str(folder), "--n", "2", "--seed", "2", "--out", str(out)]) == 2
    assert f"--out: {out.with_suffix('.npz')} exists; give --overwrite" in error(capsys)
    assert out.with_suffix(".npz").read_bytes() == before[1] and not out.exists()
    assert main(["generate", str(folder), "--n", "1", "--seed", "2", "--out", str(out), "--overwrite"]) == 0
    assert "(1 image 8x8, values 0..255)" in capsys.readouterr().out
    assert np.load(out.with_suffix(".npz"))["images"].shape == (1, 8, 8, 1)

    data = tmp_path / "arrays"
    data.mkdir()
    np.savez(data / "test.npz", x=np.random.default_rng(0).integers(0, 256, (3, 8, 8)).astype(np.uint8))
    done = tmp_path / "c.png"
    args = ["complete", str(folder), "--dataset", "arrays", "--data-dir", str(data), "--n", "1", "--out", str(done)]
    assert main(args) == 0
    assert f"wrote {done} and {done.with_suffix('.npz')} (1 completion 8x8; rows: originals" in capsys.readouterr().out
    before = done.read_bytes()
    assert main(args + ["--seed", "4"]) == 2
    assert "exist; give --overwrite to replace them" in error(capsys) and done.read_bytes() == before
    assert main(args + ["--seed", "4", "--overwrite"]) == 0


def test_score_compress_and_decompress_refuse_existing_outputs(tmp_path, capsys, monkeypatch):
    folder, _ = tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    write_pngs(tmp_path / "in", ["a.png", "b.png"])
    maps, csv_out = tmp_path / "maps", tmp_path / "s.csv"
    score = ["score", str(folder), "in", "--out", str(csv_out), "--heatmap", str(maps)]
    assert main(score) == 0
    assert capsys.readouterr().out.strip().endswith(f"; wrote {csv_out} and 2 heat maps in {maps}; made the folder "
                                                    f"{maps}")
    csv_out.unlink()
    assert main(score) == 2  # the heat maps alone count
    assert f"--heatmap: {maps / 'in_a.png'} and {maps / 'in_b.png'} exist; give --overwrite" in error(capsys)
    assert main(score[:3] + ["--limit", "1", "--out", str(csv_out)]) == 0
    assert "scored 1 image: mean bits/dim" in capsys.readouterr().out
    assert main(score + ["--overwrite"]) == 0

    stream, decoded = tmp_path / "a.pmc", tmp_path / "decoded"
    assert main(["compress", str(folder), "in", "-o", str(stream)]) == 0
    assert main(["compress", str(folder), "in", "-o", str(stream)]) == 2
    assert f"-o: {stream} and {stream}.names.json exist; give --overwrite" in error(capsys)
    assert main(["decompress", str(folder), str(stream), "-o", str(decoded)]) == 0
    assert main(["decompress", str(folder), str(stream), "-o", str(decoded)]) == 2
    assert f"-o: {decoded} exists; give --overwrite to replace it" in error(capsys)
    assert main(["decompress", str(folder), str(stream), "-o", str(decoded), "--overwrite"]) == 0


def test_missing_folders_are_made_and_said(tmp_path, capsys):
    folder, _ = tiny(tmp_path)
    out = tmp_path / "new" / "sub" / "g.png"
    assert main(["generate", str(folder), "--n", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"; made the folder {out.parent}")
    assert out.is_file() and out.with_suffix(".npz").is_file()


# -- atomic writes -----------------------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, capsys, monkeypatch):
    folder, _ = tiny(tmp_path)
    out = tmp_path / "out" / "g.png"
    assert main(["generate", str(folder), "--n", "2", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    capsys.readouterr()
    assert main(["generate", str(folder), "--n", "2", "--seed", "3", "--out", str(out), "--overwrite"]) == 2
    assert f"{out}: could not write: the disk is full" in error(capsys)
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before  # no .tmp file, nothing replaced


def test_a_folder_is_written_whole_or_not_at_all(tmp_path):
    out = tmp_path / "decoded"
    write_folder(out, {"a.png": b"1", "sub/b.png": b"2"})
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["a.png", "sub/b.png"]
    with pytest.raises(OSError):  # a name the folder cannot hold: nothing of the new folder stays
        write_folder(out, {"c.png": b"3", "sub/d.png": b"4", "sub": b"a file where a folder is"})
    assert not (out / "c.png").exists() and (out / "sub" / "b.png").read_bytes() == b"2"
    assert [p.name for p in tmp_path.iterdir()] == ["decoded"]  # no temporary folder left
    write_folder(out, {"c.png": b"3"})  # --overwrite: the new folder replaces the old one
    assert [p.name for p in out.iterdir()] == ["c.png"] and [p.name for p in tmp_path.iterdir()] == ["decoded"]


# -- the format from the extension ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", list(GRID_FORMATS))
def test_grids_are_written_losslessly_in_the_format_of_their_extension(tmp_path, ext):
    folder, _ = tiny(tmp_path, image_shape=(3, 8, 8), n_bits=3)
    out = tmp_path / f"g{ext}"
    assert main(["generate", str(folder), "--n", "3", "--out", str(out)]) == 0
    images = torch.from_numpy(np.load(out.with_suffix(".npz"))["images"]).permute(0, 3, 1, 2)
    with Image.open(out) as grid:
        assert grid.format == GRID_FORMATS[ext]
        pixels = np.asarray(grid.convert("RGB"))
    assert np.array_equal(pixels[::8, ::8], make_grid(images, 3))  # enlarged 8 times, every value exact


def test_an_npz_path_writes_the_arrays_alone(tmp_path, capsys):
    folder, _ = tiny(tmp_path, n_classes=2)
    out = tmp_path / "g.npz"
    assert main(["generate", str(folder), "--n", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "model"]
    saved = np.load(out)
    assert saved["images"].shape == (2, 8, 8, 1) and saved["labels"].tolist() == [0, 1]


def test_code_maps_go_to_a_grid_only_with_a_vqvae_to_decode_them(tmp_path, capsys, codes_data):
    folder, _ = tiny(tmp_path, image_shape=(1, 7, 7), n_codes=16)
    out = tmp_path / "out" / "bottom.png"
    assert main(["generate", str(folder), "--n", "2", "--out", str(out)]) == 2
    assert error(capsys).endswith(f"--out: {out}: cannot write a .png file: the model samples code maps and no "
                                  "VQ-VAE beside it decodes them to images; expected a path ending in .npy or .npz")
    assert main(["complete", str(folder), "--dataset", "arrays", "--data-dir", str(codes_data), "--n", "1",
                 "--out", str(out)]) == 2
    assert "no VQ-VAE beside it decodes them to images; expected a path ending in .npz" in error(capsys)
    assert not (tmp_path / "out").exists()
    assert main(["generate", str(folder), "--n", "2", "--out", str(tmp_path / "codes.npz")]) == 0
    assert np.load(tmp_path / "codes.npz")["codes"].shape == (2, 7, 7)
    capsys.readouterr()

    vqvae = vqvae_beside(folder)
    assert main(["generate", str(folder), "--n", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    npy, npz = out.with_suffix(".npy"), out.with_suffix(".npz")
    assert printed == (f"wrote {npy}, {out} and {npz} (2 code maps 7x7, values 0..15; decoded by the VQ-VAE into "
                       f"2 images 28x28); made the folder {out.parent}")
    codes = np.load(npy)
    expected = vqvae.decode_images(torch.from_numpy(codes))
    arrays = np.load(npz)
    assert np.array_equal(arrays["codes"], codes) and np.array_equal(arrays["images"], expected.permute(0, 2, 3, 1))
    assert np.array_equal(np.asarray(Image.open(out))[::2, ::2], make_grid(expected, 8)[..., 0])

    done = tmp_path / "done.png"
    assert main(["complete", str(folder), "--dataset", "arrays", "--data-dir", str(codes_data), "--n", "2",
                 "--rows", "3", "--out", str(done)]) == 0
    saved = np.load(done.with_suffix(".npz"))
    rows = torch.cat([vqvae.decode_images(torch.from_numpy(saved[k])) for k in ("originals", "completions")])
    assert np.array_equal(np.asarray(Image.open(done))[::2, ::2], make_grid(rows, 8, nrow=2)[..., 0])


# -- decompress gives files back under their names ---------------------------------------------------------------
def test_decompress_gives_image_files_back_under_their_names(tmp_path, capsys, monkeypatch):
    pytest.importorskip("constriction")
    folder, model = tiny(tmp_path, n_classes=3)
    monkeypatch.chdir(tmp_path)
    names = ["shoe.png", "sub/bag.png", "coat.png"]
    arrays = write_pngs(tmp_path, names)
    stream = tmp_path / "s.pmc"
    assert main(["compress", str(folder), *names, "--label", "2", "-o", str(stream)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"; wrote {stream} and {stream}.names.json")
    assert json.loads((tmp_path / "s.pmc.names.json").read_text())["names"] == names
    images, labels = pixelmodels.decompress(model, stream.read_bytes())  # the stream is the library's, unchanged
    assert np.array_equal(images[:, 0].numpy(), np.stack([arrays[n] for n in names])) and labels.tolist() == [2] * 3

    out = tmp_path / "back"
    assert main(["decompress", str(folder), str(stream), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"; wrote {out} (3 PNG files and labels.csv)")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == \
        ["coat.png", "labels.csv", "shoe.png", "sub/bag.png"]
    for name in names:
        assert np.array_equal(np.asarray(Image.open(out / name)), arrays[name]), name
    assert (out / "labels.csv").read_text().splitlines() == ["file,label"] + [f"{n},2" for n in names]
    assert main(["decompress", str(folder), str(stream), "-o", str(tmp_path / "back.npz")]) == 0
    assert np.load(tmp_path / "back.npz")["names"].tolist() == names

    # a stream without names (as every stream written before them): numbered files
    (tmp_path / "s.pmc.names.json").unlink()
    assert main(["decompress", str(folder), str(stream), "-o", str(tmp_path / "numbered")]) == 0
    assert sorted(p.name for p in (tmp_path / "numbered").iterdir()) == \
        ["000000.png", "000001.png", "000002.png", "labels.csv"]
    # a stream compressed again without files: its names go too
    np.savez(tmp_path / "test.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.zeros(2, np.int64), n_classes=3)
    (tmp_path / "s.pmc.names.json").write_text("{}")
    assert main(["compress", str(folder), "--dataset", "arrays", "--data-dir", ".", "-o", str(stream)]) == 2
    assert f"{stream} and {stream}.names.json exist" in error(capsys)
    assert main(["compress", str(folder), "--dataset", "arrays", "--data-dir", ".", "-o", str(stream),
                 "--overwrite"]) == 0
    assert not (tmp_path / "s.pmc.names.json").exists()
    # names of another stream, names that leave the folder or too few are refused before decoding
    sha = hashlib.sha256(stream.read_bytes()).hexdigest()
    monkeypatch.setattr("pixelmodels.app.compression_files.decompress", never)
    for names, message in [(["a.png", "b.png"], "holds the names of another stream"),
                           (["a.png", "../b.png"], "expected 2 distinct relative file names ending in .png"),
                           (["a.png", "/b.png"], "expected 2 distinct"), (["a.png", "A.png"], "expected 2 distinct"),
                           (["a.png"], "expected 2 distinct")]:
        kept = {"stream_sha256": sha if "another" not in message else "0" * 64, "names": names}
        (tmp_path / "s.pmc.names.json").write_text(json.dumps(kept))
        assert main(["decompress", str(folder), str(stream), "-o", str(tmp_path / "x")]) == 2
        assert f"s.pmc.names.json: {message}" in error(capsys) and not (tmp_path / "x").exists()


def test_names_of_files_from_several_folders_and_a_dataset(tmp_path):
    from pixelmodels.app.compression_files import file_names

    root = str(tmp_path)
    sources = ["ds:test", "ds:test", f"{root}/a/x.png", f"{root}/b/x.jpg", f"{root}/b/X.png", f"{root}/a/c/y.png"]
    assert file_names(sources, [0, 1, None, None, None, None]) == \
        ["000000.png", "000001.png", "a/x.png", "b/x.png", "b/X-2.png", "a/c/y.png"]
    assert file_names(["ds:test"], [0]) is None


# -- heat maps -------------------------------------------------------------------------------------------------
def test_a_heat_map_shows_the_image_beside_its_map_with_a_scale(tmp_path, capsys, monkeypatch):
    folder, model = tiny(tmp_path, n_bits=3)
    monkeypatch.chdir(tmp_path)
    array = write_pngs(tmp_path, ["a.png"])["a.png"]
    maps = tmp_path / "maps"
    assert main(["score", str(folder), "a.png", "--heatmap", str(maps)]) == 0
    x = torch.from_numpy(array >> 5)[None, None]
    with torch.no_grad():
        per_pixel = -model.log_prob(x, per_pixel=True)[0].numpy()
    s, gap, side = display_scale(8, 8), reports.GAP, 8 * display_scale(8, 8)
    figure = np.asarray(Image.open(maps / "a.png"))
    assert figure.shape[0] == side + 2 * gap and figure.shape[2] == 3
    image = np.asarray(enlarge(Image.fromarray(np.rint((array >> 5).astype(int) * 255 / 7).astype(np.uint8)), s))
    assert np.array_equal(figure[gap:gap + side, gap:gap + side], np.repeat(image[..., None], 3, axis=2))
    heat = np.asarray(enlarge(Image.fromarray(reports.heatmap(per_pixel, 3)), s)).astype(int)
    x0 = 2 * gap + side
    assert np.abs(figure[gap:gap + side, x0:x0 + side].astype(int) - heat).max() <= 1
    bar = figure[gap:gap + side, x0 + side + gap:x0 + side + gap + reports.BAR]
    assert np.array_equal(bar, np.repeat(reports.heat_colors(np.linspace(1, 0, side))[:, None], reports.BAR, 1))
    assert (figure[:gap, :x0 + side] == 255).all() and (figure[:, :gap] == 255).all()  # white margins
    label = figure[gap:gap + 12, x0 + side + gap + reports.BAR + 3:]
    assert (label < 128).any()  # the tick labels are drawn: "3 bits" at the top


def test_a_heat_map_of_code_maps_has_no_image(tmp_path):
    map_only = reports.heatmap_figure(None, np.zeros((7, 7)), 4.0)
    with_image = reports.heatmap_figure(torch.zeros(1, 7, 7, dtype=torch.uint8), np.zeros((7, 7)), 4.0, 8)
    side = 7 * display_scale(7, 7)
    assert with_image.width - map_only.width == side + reports.GAP
    assert np.array_equal(np.asarray(map_only)[reports.GAP:reports.GAP + side, reports.GAP:reports.GAP + side],
                          np.zeros((side, side, 3), np.uint8))  # 0 bits everywhere: black
