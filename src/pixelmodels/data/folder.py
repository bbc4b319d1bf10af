"""Reader of image files: one image (:func:`load_image`), a folder of them (:func:`read_folder`, the
``folder`` dataset), and what was read (:class:`ReadFacts`), for every command that reads PNG / JPEG files.

Images are found recursively (``.png``, ``.jpg``, ``.jpeg``, any case; hidden files and folders are
skipped) and sorted by path. A folder with ``train/`` and ``test/`` subfolders has its splits there;
any other folder holds out a fixed fraction of its images for test (``TEST_FRACTION``, at least one),
chosen by a hash of each file's path under the folder with a fixed seed, so the two splits never overlap
and are the same on every run and every machine.

Each image is turned upright (EXIF orientation) and converted to the channels asked for: alpha is
dropped, grayscale becomes RGB (three equal channels) and RGB grayscale (Pillow's ITU-R 601-2 luma).
A 16-bit value v becomes the 8-bit value ``v >> 8``. When resizing, the image is center-cropped to the
aspect ratio asked for and resized (Pillow's BOX filter when shrinking, LANCZOS otherwise); without
resizing, a file of another size or channel count is an error naming it. There are no labels.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DatasetError, one_line

EXTENSIONS = (".png", ".jpg", ".jpeg")
TEST_FRACTION = 0.1  # of a folder without train/ and test/ subfolders, held out for test
SPLIT_SEED = "pixelmodels-test-split-0"  # salts the hash that picks the held-out images
# Pillow mode (the file's raw mode for 16-bit files) -> what a report calls it, and its channels
KINDS = {"1": ("1-bit", 1), "L": ("grayscale", 1), "LA": ("grayscale+alpha", 1), "I": ("grayscale", 1),
         "RGB": ("RGB", 3), "RGBA": ("RGBA", 3), "P": ("palette", 3), "PA": ("palette", 3), "CMYK": ("CMYK", 3)}


@dataclass
class ReadFacts:
    """What a reader of image files read, as data (a command words it; the reader prints nothing).

    Attributes:
        source: the folder or file the images came from, as given.
        files: the image files read, in order.
        skipped: the files under the folder that are not images, relative to it, sorted (not read).
        converted: files converted to the channels or depth asked for, counted by what they held:
            'RGBA' (alpha dropped), 'grayscale' (to RGB), 'RGB' (to grayscale), '16-bit grayscale' (v >> 8), ...
        resized: files cropped and resized, counted by their size, 'HxW'.
        held_out: for a split of a folder without train/ and test/: (images in its train split, in its test
            split); None otherwise.
    """

    source: str
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    converted: Counter = field(default_factory=Counter)
    resized: Counter = field(default_factory=Counter)
    held_out: tuple[int, int] | None = None


def shape_words(shape) -> str:
    """(C, H, W) -> 'grayscale 28x28', 'RGB 32x32'."""
    c, h, w = shape
    return f"{ {1: 'grayscale', 3: 'RGB'}.get(c, f'{c}-channel') } {h}x{w}"


def describe(shape) -> str:
    """(C, H, W) -> '(1, 28, 28) (grayscale 28x28)', for messages."""
    return f"{tuple(shape)} ({shape_words(shape)})"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def list_images(root: Path) -> tuple[list[Path], list[str]]:
    """The image files under folder ``root``, sorted, and the other files there (relative to it, sorted)."""
    images, others = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        visible = not _hidden(path, root)
        (images if visible and path.suffix.lower() in EXTENSIONS else others).append(path)
    if not images:
        raise DatasetError(f"{root}: expected PNG or JPEG images ({', '.join(EXTENSIONS)}, searched "
                           "recursively), found none")
    return images, [p.relative_to(root).as_posix() for p in others]


def held_out(files: list[Path], root: Path) -> set[Path]:
    """The test split of a folder without train/ and test/: ``TEST_FRACTION`` of ``files`` (at least one), those
    whose path under ``root`` hashes lowest with ``SPLIT_SEED``."""
    def rank(path: Path) -> str:
        return hashlib.sha256(f"{SPLIT_SEED}/{path.relative_to(root).as_posix()}".encode()).hexdigest()

    return set(sorted(files, key=rank)[:max(1, round(len(files) * TEST_FRACTION))])


def _rawmode(image: Image.Image) -> str:
    """The raw mode of a file's pixel data before decoding ('RGB;16B' for a 16-bit RGB PNG), or ''."""
    args = image.tile[0][3] if image.tile else None  # (codec, extents, offset, args)
    return args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")


def kind_of(mode: str, rawmode: str = "") -> tuple[str, int]:
    """What a file of Pillow ``mode`` (and raw mode) holds, in words, and its channels: ('16-bit RGB', 3)."""
    wide = ";16" in rawmode or mode.startswith("I")
    name, channels = KINDS.get((rawmode if wide and rawmode else mode).split(";")[0], (mode, 3))
    return (f"16-bit {name}" if wide else name), channels


def eight_bit(image: Image.Image, path) -> Image.Image:
    """A 16-bit grayscale image (Pillow modes I;16, I;16B, I;16L, I) as 8 bits: v -> v >> 8."""
    if image.mode == "F":
        raise DatasetError(f"{path}: expected integer pixel values, found floating point (Pillow mode 'F')")
    values = np.asarray(image).astype(np.int64)  # uint16 of either byte order, or int32
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DatasetError(f"{path}: expected 16-bit values 0..65535, found {values.min()}..{values.max()} "
                           f"(Pillow mode {image.mode!r})")
    return Image.fromarray((values >> 8).astype(np.uint8))


def crop_resize(image: Image.Image, height: int, width: int) -> Image.Image:
    """The largest centered crop of ``image`` with the aspect ratio height:width, resized to it (BOX when
    shrinking, LANCZOS otherwise)."""
    w, h = image.size
    cw, ch = (max(1, h * width // height), h) if w * height > h * width else (w, max(1, w * height // width))
    left, top = (w - cw) // 2, (h - ch) // 2
    image = image.crop((left, top, left + cw, top + ch))
    if (cw, ch) != (width, height):
        shrink = cw >= width and ch >= height
        image = image.resize((width, height), Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS)
    return image


def load_image(path: Path, size: int | tuple[int, int], channels: int, *, resize: bool = True,
               facts: ReadFacts | None = None) -> np.ndarray:
    """One image file as uint8 (channels, H, W), ``size`` = H = W or (H, W) (see the module docstring).

    Args:
        resize: crop and resize a file of another size, and convert one of other channels (grayscale to
            RGB, RGB to grayscale); without it, such a file is an error (alpha and 16 bits are converted).
        facts: where to count the conversion, if any (:class:`ReadFacts`).

    Raises:
        DatasetError: the file cannot be decoded (Pillow raises many kinds of exception for corrupt data),
            declares more than ``Image.MAX_IMAGE_PIXELS`` pixels (refused before decoding), holds floating
            point values, or has another shape and ``resize`` is False.
    """
    height, width = (size, size) if isinstance(size, int) else size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                rawmode = _rawmode(image)
                image = ImageOps.exif_transpose(image)  # decodes the file
        kind, found = kind_of(image.mode, rawmode)
        if image.mode.startswith(("I", "F")):
            image = eight_bit(image, path)
        if (found, image.height, image.width) != (channels, height, width) and not resize:
            raise DatasetError(f"{path}: expected an image of shape {describe((channels, height, width))}, found "
                               f"{(found, image.height, image.width)} ({kind} {image.height}x{image.width}); "
                               "--resize (resize=True) converts and resizes it")
        original = f"{image.height}x{image.width}"
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (width, height):
            image = crop_resize(image, height, width)
            if facts is not None:
                facts.resized[original] += 1
        array = np.asarray(image, dtype=np.uint8)
    except DatasetError:
        raise
    except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, DecompressionBomb*...
        raise DatasetError(f"{path}: expected a readable PNG or JPEG image, found unreadable data "
                           f"({type(exc).__name__}: {one_line(exc)})") from exc
    if facts is not None:
        facts.files.append(Path(path))
        if kind != ("grayscale" if channels == 1 else "RGB"):
            facts.converted[kind] += 1
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def read_folder(root: Path, split: str, image_size: int, channels: int) -> tuple[np.ndarray, ReadFacts]:
    """The images of ``split`` under ``root`` as uint8 (N, channels, image_size, image_size), and what was read.

    Raises:
        DatasetError: no such folder, no images in it, the test split of a folder of one image (nothing to
            hold out), or an image that cannot be read.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: expected a folder of PNG/JPEG images, found no such folder")
    split_dirs = (root / "train").is_dir() and (root / "test").is_dir()
    files, skipped = list_images(root / split if split_dirs else root)
    facts = ReadFacts(str(root), skipped=[f"{split}/{name}" for name in skipped] if split_dirs else skipped)
    if not split_dirs:
        if len(files) == 1 and split == "test":
            raise DatasetError(f"{root}: expected at least 2 images, to hold out {TEST_FRACTION:.0%} for a test split "
                               f"(there are no train/ and test/ subfolders), found 1 ({files[0]})")
        test = held_out(files, root) if len(files) > 1 else set()
        facts.held_out = (len(files) - len(test), len(test))
        files = [f for f in files if (f in test) == (split == "test")]
    images = np.empty((len(files), channels, image_size, image_size), np.uint8)
    for i, path in enumerate(files):
        images[i] = load_image(path, image_size, channels, facts=facts)
    return images, facts
