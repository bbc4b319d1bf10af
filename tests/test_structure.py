"""The shape of the house: every module imports, no import circle, every family beside its cache."""

import ast
import importlib
import itertools
from pathlib import Path

import pytest
import torch

import pixelmodels
from pixelmodels.models.base import SamplingCache
from pixelmodels.models.registry import REGISTRY

from cachecheck import perturbed

ROOT = Path(pixelmodels.__file__).parent


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package (packages as their ``__init__``), by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("pixelmodels",) + path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (function-level imports included)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def test_every_module_imports():
    modules = package_modules()
    assert len(modules) > 30 and "pixelmodels.models.pixelcnn_cache" in modules
    for name in modules:
        if name != "pixelmodels.__main__":  # runs the command line when imported
            importlib.import_module(name)


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph (as a list of nodes, first == last), or None."""
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, trail + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


def test_no_import_circle():
    modules = package_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert find_circle(graph) is None, f"import circle: {' -> '.join(find_circle(graph))}"
    assert not any(m.startswith("pixelmodels.models.pixel") for m in graph["pixelmodels.models.registry"])
    assert "pixelmodels.models.registry" in graph["pixelmodels.models.pixelcnn"]  # each family registers itself


APP = "pixelmodels.app"  # the application layer; every other module of the package is the core
FACES = ("pixelmodels", "pixelmodels.__main__")  # the public API and ``python -m``: they hand on both layers


def layering_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(core module, application module) for every import that runs from the core up into the application."""
    def is_app(name):
        return name == APP or name.startswith(APP + ".")

    return sorted((name, target) for name, targets in graph.items() if not is_app(name) and name not in FACES
                  for target in targets if is_app(target))


def test_the_core_never_imports_the_application_layer():
    modules = package_modules()
    assert APP in modules and "pixelmodels.app.cli" in modules and "pixelmodels.training" in modules
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert layering_violations(graph) == []


def test_the_layering_check_can_fail(tmp_path):
    modules = {"pixelmodels.sampling": tmp_path / "s.py", "pixelmodels.app": tmp_path / "app.py",
               "pixelmodels.app.commands": tmp_path / "c.py"}
    (tmp_path / "s.py").write_text("def f():\n    from pixelmodels.app.commands import GenerateSettings\n")
    (tmp_path / "app.py").write_text("")
    (tmp_path / "c.py").write_text("from pixelmodels import sampling\n")
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert layering_violations(graph) == [("pixelmodels.sampling", "pixelmodels.app.commands")]


def test_the_import_circle_check_can_fail(tmp_path):
    modules = {"pixelmodels.a": tmp_path / "a.py", "pixelmodels.b": tmp_path / "b.py", "pixelmodels.c": tmp_path / "c.py"}
    (tmp_path / "a.py").write_text("def f():\n    from pixelmodels.b import g\n")
    (tmp_path / "b.py").write_text("from pixelmodels import c\n")
    (tmp_path / "c.py").write_text("import pixelmodels.a\n")
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"pixelmodels.a": {"pixelmodels.b"}, "pixelmodels.b": {"pixelmodels.c"},
                     "pixelmodels.c": {"pixelmodels.a"}}
    assert find_circle(graph) == ["pixelmodels.a", "pixelmodels.b", "pixelmodels.c", "pixelmodels.a"]
    graph["pixelmodels.c"] = set()
    assert find_circle(graph) is None


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_family_is_a_model_file_beside_its_cache_file(name):
    spec = REGISTRY[name]
    family, cache = spec.cls.__module__, spec.cls.cache_class
    assert cache.__module__ == family + "_cache", "the cache lives beside its model, in <family>_cache.py"
    assert issubclass(cache, SamplingCache)
    modules = package_modules()
    assert family + "_cache" not in imports_of(family, modules[family], modules), "a model never imports its cache"
    assert family in imports_of(family + "_cache", modules[family + "_cache"], modules)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_cache_stepped_outside_sample_builds_no_graph(name):
    """A conditional model's cache, stepped directly with gradients enabled: no autograd graph grows."""
    model = perturbed(name, 3, 4, (4, 4))
    cache = model.sampling_cache(2, torch.tensor([1, 3]))
    x = torch.randint(0, 8, (2, 3, 4, 4))
    for i, j in itertools.product(range(2), range(4)):
        for _ in range(model.steps_per_position):
            out = cache.step(x, i, j)
            assert not out.requires_grad and out.grad_fn is None
    assert model.steps_per_position == (3 if model.channel_masked else 1)
