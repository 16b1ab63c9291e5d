"""The shape of the code: no import cycles, each package reached through its face, no private names across
modules, a light `import textfit`, small modules and functions that fit on a screen or two (or a written reason)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src" / "textfit"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 120
# Modules and functions (textfit.module.function) over the caps, each with the reason it stays whole.
LONG = {
    "textfit.cli.parser": "the command table: every command's record and flags with their help, which is --help",
    "textfit.config": "TrainConfig: every option's field, default and help in one dataclass, the CLI's one source",
    "textfit.predict.export.export_onnx": "one export in a temporary folder (trace, parity, int8, move into place) "
    "under one try/finally that cleans it up",
    "textfit.serve.app.create_app": "the server's routes, closures over the one model, batcher and limits they share",
    "textfit.train.setup.setup": "the run's set-up in the order its checks must run, every refusal before a model "
    "loads, read top to bottom",
}
HEAVY = ("torch", "pandas", "datasets", "transformers", "numpy")


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """Module -> the textfit modules it imports (at the top or inside functions; not for type checking)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    graph = import_graph()
    assert "textfit.train.loop" in graph and "textfit.train.setup" in graph["textfit.train.loop"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def _long_modules() -> dict[str, int]:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    return {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES}


def _long_functions() -> dict[str, int]:
    long = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = lines
    return long


def test_modules_are_small():
    """Over MAX_MODULE_LINES only with a reason in LONG."""
    assert {n: s for n, s in _long_modules().items() if n not in LONG} == {}


def test_functions_fit_on_a_screen_or_two():
    """Over MAX_FUNCTION_LINES only with a reason in LONG."""
    assert {n: s for n, s in _long_functions().items() if n not in LONG} == {}


def test_every_exemption_is_needed_and_says_why():
    over = _long_modules() | _long_functions()
    assert [n for n in LONG if n not in over] == [], "under the caps now: remove the entry from LONG"
    assert all(len(why.split()) >= 3 for why in LONG.values())


def face_names(package: str) -> set[str]:
    """The names a package's __init__ defines or imports from elsewhere than `package` itself: what its face
    offers (a function named like one of its modules, `accel.steady`, included); not the modules it imports."""
    tree = ast.parse(_modules()[package].read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom) and node.module != package:
            names.update(a.asname or a.name for a in node.names)
    return names


def test_only_textfit_accel_reaches_into_its_modules():
    """Outside the package: `from textfit import accel`, or `from textfit.accel import X` where the package's
    __init__ defines or re-exports X; never `textfit.accel.<module>`."""
    face, modules = face_names("textfit.accel"), _modules()
    found = []
    for name, path in modules.items():
        if name == "textfit.accel" or name.startswith("textfit.accel."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [f"{name}: import {a.name}" for a in node.names if a.name.startswith("textfit.accel.")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("textfit.accel."):
                found.append(f"{name}: from {node.module} import ...")
            elif isinstance(node, ast.ImportFrom) and node.module == "textfit.accel":
                found += [
                    f"{name}: from textfit.accel import {a.name}"
                    for a in node.names
                    if a.name not in face and f"textfit.accel.{a.name}" in modules
                ]
    assert found == []


def test_the_accel_face_offers_what_it_promises():
    face = face_names("textfit.accel")
    assert {"steady", "release", "governor_for", "cpu_kind", "describe_cpu", "settings", "Settings"} <= face
    assert "attention" not in face  # a module it imports for itself


def private_uses(tree: ast.AST) -> list[str]:
    """`from textfit.X import _name`, and `X._name` where X was imported from textfit (dunders allowed)."""
    private = lambda name: name.startswith("_") and not name.endswith("__")  # noqa: E731
    bound: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("textfit") and not node.level:
            for a in node.names:
                if private(a.name):
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
                bound.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            bound.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("textfit"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_private_name_check_finds_planted_uses():
    tree = ast.parse(
        "from textfit.data.read import _decode, codec\nfrom textfit import accel\nimport textfit.run as r\n"
        "accel._state\nr._x\nself._y\naccel.__all__\n"
    )
    assert private_uses(tree) == [
        "line 1: from textfit.data.read import _decode",
        "line 4: accel._state",
        "line 5: r._x",
    ]


def test_no_module_uses_another_modules_private_names():
    found = {
        name: uses
        for name, path in _modules().items()
        if (uses := private_uses(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert found == {}


def test_importing_textfit_and_its_cli_loads_nothing_heavy():
    """The package face and the command's parser import PyTorch, pandas and datasets only when used:
    `textfit --help` and a usage error answer at once."""
    code = f"import textfit, textfit.cli; import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_only_run_py_reads_the_manifest_file():
    """textfit.json is written and read in run.py only (the export copies it through RunManifest)."""
    users = [
        n for n, p in _modules().items() if '"textfit.json"' in p.read_text(encoding="utf-8") and n != "textfit.run"
    ]
    assert users == ["textfit.predict.export"]  # the ONNX folder's own copy, written from RunManifest.to_dict()


def test_methods_and_model_kinds_are_reached_through_their_faces():
    """A training method is named only in its module and the registry (train/methods/__init__): nothing outside
    train/methods imports a method's module; a model kind only through models/'s face (nothing outside models/
    and the static method imports models.static)."""
    graph = import_graph()
    methods = {m for m in graph if m.startswith("textfit.train.methods.")}
    for name, targets in graph.items():
        if not name.startswith("textfit.train.methods"):
            assert not (targets & methods), f"{name} imports {sorted(targets & methods)}: ask the registry"
        if not name.startswith(("textfit.models", "textfit.train.methods.static")):
            assert "textfit.models.static" not in targets, f"{name} imports models.static: ask textfit.models"
    spine = ["textfit.train.setup", "textfit.train.loop", "textfit.train.finish", "textfit.train.optim"]
    for name in spine:
        text = _modules()[name].read_text(encoding="utf-8")
        for word in ('"contrastive"', '"zero-shot"', '"static"', '"distill"', "static.", "fewshot", "zeroshot."):
            assert word not in text, f"{name} names a method ({word}); give the method module the question"
