"""The package's shape: layers that only import downwards, short files, short functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "byol"
# The path a batch takes, lowest first. A module may import its own layer and the ones before.
LAYERS = [
    ("errors", "settings", "files", "backbones", "loggers", "run_lock"),
    ("runtime", "distributed", "sync_batchnorm", "speed"),
    ("data",),
    ("views",),
    ("methods",),
    # The run's config is composed of the settings its parts declare, so it sits above them.
    ("config", "presets", "run_folder", "checkpoint"),
    ("evaluation",),  # below training: the kNN monitor uses it, never the other way round
    ("training",),
    ("reporting",),
    ("experiments",),
    ("cli", "__main__", "__init__"),  # cli/: one module per group of commands
]
MAX_FILE_LINES = 300
# A net against functions nobody can read on one screen, not a cap to cut code to: a function that
# reads top to bottom beats several made to fit.
MAX_FUNCTION_LINES = 100


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name if name != "byol" else "byol.__init__"] = path
    return found


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("byol"):
            if node.module == "byol":
                names += [f"byol.{alias.name}" for alias in node.names]
            else:
                names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("byol.")]
    return names


def test_no_module_imports_a_layer_above_its_own():
    climbing = [
        f"{name} imports {target}"
        for name, path in modules().items()
        for target in imports(path)
        if layer_of(target) > layer_of(name)
    ]
    assert climbing == []


def test_evaluation_never_imports_training():
    for name, path in modules().items():
        if name.startswith("byol.evaluation"):
            assert not [t for t in imports(path) if t.startswith("byol.training")], name


def test_every_module_belongs_to_a_layer():
    for name in modules():
        layer_of(name)  # raises StopIteration for a module outside the layer list


def test_no_file_over_300_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: lines for n, lines in long.items() if lines > MAX_FILE_LINES} == {}


def test_no_function_over_60_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length}")
    assert long == []


def test_no_formatting_switched_off_to_fit_a_limit():
    skipped = [name for name, path in modules().items() if "fmt: skip" in path.read_text()]
    assert skipped == []


def test_no_path_outside_the_repository():
    for name, path in modules().items():
        text = path.read_text()
        assert "PAPER.md" not in text and "../shared" not in text, name
        assert "parents[2]" not in text, name


def test_importing_the_package_is_cheap_and_every_public_name_resolves() -> None:
    """`import byol` must not import torch (the `byol` command handles a Ctrl-C during that
    import only once its own code runs); every name in __all__ is reachable from the package."""
    import subprocess
    import sys

    probe = "import sys, byol; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    import byol

    assert all(getattr(byol, name) is not None for name in byol.__all__)
    assert byol.BYOLOutput is byol.MethodOutput
