"""The library calls check their options through the declarations the CLI's flags come from
(``config.SamplingOptions``, ``ScoreOptions``, ``CodecOptions``, ``likelihoods.HeadOptions``): the same
values refused with the same one line, both ends of each declared range taken, and the command line
saying what the library says."""

import contextlib
import io
import math

import numpy as np
import pytest
import torch

import pixelmodels
from pixelmodels import compress, create_model, decompress, sample, score
from pixelmodels.app.cli import main
from pixelmodels.config import CodecOptions, SamplingOptions, ScoreOptions
from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import HeadOptions, LogisticMixtureHead
from pixelmodels.settings import SettingError, field_types

pytest.importorskip("constriction")


@pytest.fixture(scope="module")
def tiny():
    """A tiny model, 3 images it takes and their stream."""
    torch.manual_seed(0)
    model = create_model("pixelcnn", image_shape=(1, 3, 3), n_bits=2, preset="tiny").eval()
    x = torch.randint(0, 4, (3, 1, 3, 3), generator=torch.Generator().manual_seed(1))
    return model, x, compress(model, x, chunk_size=2)


def known(model):
    return torch.zeros(model.image_shape[1:], dtype=torch.bool)


# (call on the tiny model with the option set to v, the declaring class, the field)
CALLS = {
    "sample.temperature": (lambda m, x, data, v: sample(m, 1, temperature=v), SamplingOptions, "temperature"),
    "complete.temperature": (lambda m, x, data, v: pixelmodels.complete(m, x[:1], known(m), temperature=v),
                             SamplingOptions, "temperature"),
    "score.batch_size": (lambda m, x, data, v: score(m, x, batch_size=v), ScoreOptions, "batch_size"),
    "compress.chunk_size": (lambda m, x, data, v: compress(m, x, chunk_size=v), CodecOptions, "chunk_size"),
    "compress.workers": (lambda m, x, data, v: compress(m, x, workers=v), CodecOptions, "workers"),
    "decompress.workers": (lambda m, x, data, v: decompress(m, data, workers=v), CodecOptions, "workers"),
    "LogisticMixtureHead.n_mixtures": (lambda m, x, data, v: LogisticMixtureHead(1, 2, v), HeadOptions,
                                       "n_mixtures"),
}


def declared(cls, name):
    """(the declaration's check, whether the field is an int)."""
    return cls.__dataclass_fields__[name].metadata["check"], field_types(cls)[name][0] is int


def bad_values(cls, name):
    check, is_int = declared(cls, name)
    low = check.ge - 1 if check.ge is not None else check.gt
    high = check.le + 1 if check.le is not None else check.lt
    return [low, high, True, "3"] + ([2.5] if is_int else [math.nan, math.inf])


@pytest.mark.parametrize("call", CALLS)
def test_a_library_call_refuses_what_the_flag_refuses_with_the_same_line(tiny, call):
    fn, cls, name = CALLS[call]
    for value in bad_values(cls, name):
        with pytest.raises(SettingError) as declaration:
            cls(**{name: value})
        with pytest.raises(PixelModelsError) as library:
            fn(*tiny, value)
        assert str(library.value) == str(declaration.value), (call, value)
        assert "\n" not in str(library.value) and str(library.value).startswith(f"--{name.replace('_', '-')}: ")


@pytest.mark.parametrize("call", CALLS)
def test_a_library_call_takes_both_ends_of_the_declared_range_and_numpy_numbers(tiny, call):
    fn, cls, name = CALLS[call]
    check, is_int = declared(cls, name)
    ends = [v for v in (check.ge, check.le) if v is not None]
    kind = np.int64 if is_int else np.float32
    for value in ends + [kind(ends[-1])]:
        fn(*tiny, value)


def test_the_chunks_are_those_of_the_declaration_and_a_numpy_size_gives_the_same_stream(tiny):
    """The codec and the CLI agree on chunk_size: 1 to 65,536."""
    model, x, data = tiny
    assert compress(model, x, chunk_size=np.int64(2), workers=np.int32(2)) == data
    assert torch.equal(decompress(model, compress(model, x, chunk_size=65_536)), x.to(torch.uint8))
    with pytest.raises(PixelModelsError, match=r"^--chunk-size: expected at most 65536, found 65537"):
        compress(model, x, chunk_size=65_537)


@pytest.mark.parametrize("argv,call,value", [
    (["compress", "--pretrained", "fashion-mnist", "-o", "x.pmc", "--chunk-size", "70000"],
     "compress.chunk_size", 70_000),
    (["compress", "--pretrained", "fashion-mnist", "-o", "x.pmc", "--workers", "0"], "compress.workers", 0),
    (["score", "--pretrained", "fashion-mnist", "--batch-size", "0"], "score.batch_size", 0),
    (["generate", "--pretrained", "fashion-mnist", "--temperature", "-1"], "sample.temperature", -1.0),
])
def test_the_command_line_says_what_the_library_says(tiny, tmp_path, monkeypatch, argv, call, value):
    monkeypatch.chdir(tmp_path)
    fn, _, _ = CALLS[call]
    with pytest.raises(PixelModelsError) as library:
        fn(*tiny, value)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 2
    assert err.getvalue() == f"pixelmodels {argv[0]}: error: {library.value}\n"
    assert not any(tmp_path.iterdir())


def test_evaluate_checks_its_batch_size_as_score_does():
    model = pixelmodels.create_model("pixelcnn", image_shape=(1, 4, 4), preset="tiny", n_bits=2)
    data = pixelmodels.data.ImageDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.full((3,), -1), 2)
    with pytest.raises(PixelModelsError, match=r"^--batch-size: expected at least 1, found 0"):
        pixelmodels.evaluate(model, data, batch_size=0)
    assert pixelmodels.evaluate(model, data, batch_size=2) == pytest.approx(
        model.bits_per_dim(data.images).mean().item(), rel=1e-5)
