"""The package's shape: no import cycles, no upward imports, one stage layer.

Every ``import hjcag...`` counts, lazy ones inside functions too: a cycle through a lazy import still means two
modules that cannot be understood (or changed) apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "hjcag"

# Lower layers never import higher ones. A package's modules may import each other (without cycles).
LAYERS = (
    ("hjcag.errors", "hjcag.schema", "hjcag.model_catalog", "hjcag.params", "hjcag.params_file", "hjcag.identity",
     "hjcag.cpus", "hjcag.device", "hjcag.progress", "hjcag.mlflow_store"),
    ("hjcag.model",),
    ("hjcag.artifacts",),
    ("hjcag.data",),
    ("hjcag.features",),
    ("hjcag.validate",),
    ("hjcag.train",),
    ("hjcag.registry",),
    ("hjcag.serve",),
    ("hjcag.client",),
    ("hjcag.predict",),
    ("hjcag.stages",),
    ("hjcag.demo", "hjcag.pipeline"),
    ("hjcag.cli",),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hjcag"):
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t not in (name, "hjcag")}
    return graph


def layer_of(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it where it belongs")


def test_no_import_cycles() -> None:
    graph = imports()
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep):], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_upward_imports() -> None:
    upward = sorted(f"{m} -> {d}" for m, deps in imports().items() for d in deps if layer_of(d) > layer_of(m))
    assert upward == [], "imports from a higher layer:\n" + "\n".join(upward)


def test_only_the_stage_layer_orchestrates() -> None:
    """The CLI, the KFP components and the demo reach the package's stages through hjcag.stages only."""
    graph = imports()
    callers = ("hjcag.cli", "hjcag.pipeline.components", "hjcag.demo")
    stage_homes = ("hjcag.data.prepare", "hjcag.features.extract", "hjcag.validate", "hjcag.train.run",
                   "hjcag.train.evaluate", "hjcag.registry.gate", "hjcag.registry.register", "hjcag.serve.package")
    direct = sorted(f"{c} -> {d}" for c in callers for d in graph[c] if d.startswith(stage_homes))
    assert direct == [], "bypasses hjcag.stages:\n" + "\n".join(direct)


def test_the_model_catalogue_names_builders_in_the_model_package() -> None:
    """hjcag.model_catalog (lowest layer) names each model's class as a "module:Class" string that the factory
    imports when it builds one: an import the graph above cannot see, so it must stay inside hjcag.model (the
    factory's own package, not the factory itself) and name a class that module defines."""
    from hjcag.model_catalog import MODELS

    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    for entry in MODELS:
        module, _, cls = entry.builder.partition(":")
        assert module.startswith("hjcag.model.") and module in modules and module != "hjcag.model.factory", entry
        classes = {n.name for n in ast.parse(modules[module].read_text(encoding="utf-8")).body
                   if isinstance(n, ast.ClassDef)}
        assert cls in classes, f"{entry.name}: {module} defines no class {cls!r}"


def test_in_serving_only_raw_media_reaches_the_feature_extractors() -> None:
    """The predictor reads as its steps (parse, extract, collate, windows, forward, answer); the extractors, media
    files and media probes behind "extract" are hjcag.serve.raw_media's alone."""
    reach = sorted(f"{m} -> {d}" for m, deps in imports().items() if m.startswith("hjcag.serve.")
                   and m != "hjcag.serve.raw_media" for d in deps if d.startswith("hjcag.features"))
    assert reach == [], "serving modules beside hjcag.serve.raw_media that import hjcag.features:\n" + "\n".join(reach)


def test_archives_leave_out_exactly_the_modules_above_serving() -> None:
    """hjcag.serve.package.NOT_SERVED (what an archive does not carry) is the layers above hjcag.serve, so by the
    no-upward-imports rule nothing serving runs can import what the archive leaves out."""
    from hjcag.serve.package import NOT_SERVED

    serving = layer_of("hjcag.serve")
    above = {m.split(".")[1] + ("" if (SRC / m.split(".")[1]).is_dir() else ".py")
             for m in imports() if m != "hjcag" and layer_of(m) > serving}
    assert above == set(NOT_SERVED)
