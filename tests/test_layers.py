"""The package's folders form layers and every import goes down (issue 19); read from the source
with `ast`, so lazy imports inside functions count too and nothing is imported to check.

    run/         a run's config, directory, records, processes, progress (imports no other folder)
    data/        data formats shared by everything above (imports run/)
    engines/     generation, models, training (imports data/, run/)
    loop/        the paper's stages (imports engines/, data/, run/)
    methods/     the follow-up methods (imports loop/ and below; never evaluation/)
    evaluation/  measuring a run (imports loop/ and below; never methods/, never training)
    cli.py, stages.py, pipeline.py, checks.py: the top, which wires them (imports anything)
"""

from __future__ import annotations

import ast
import os

import pytest

SRC = os.path.join(os.path.dirname(__file__), "..", "src", "srlm")
RANK = {"run": 0, "data": 1, "engines": 2, "loop": 3, "methods": 4, "evaluation": 4}
TOP = 5  # srlm/*.py
# Evaluation judges with the loop's judge but never trains: these modules train.
TRAINING = ("srlm.engines.training", "srlm.engines.weighted_dpo", "srlm.loop.sft", "srlm.loop.dpo")


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for base, _, files in os.walk(SRC):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(base, name), os.path.dirname(SRC))[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(base, name)
    return out


MODULES = _modules()


def _folder(module: str) -> str:
    """'srlm.loop.judge' -> 'loop'; a top-level module (srlm.cli) is its own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or module in (f"srlm.{f}" for f in RANK) else parts[-1]


def _rank(module: str) -> int:
    return RANK.get(_folder(module), TOP)


def imports() -> list[tuple[str, str, int]]:
    """(importer, imported srlm module, line) for every absolute srlm import, lazy ones included."""
    out = []
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "srlm":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    out.append((module, sub if sub in MODULES else node.module, node.lineno))
            elif isinstance(node, ast.Import):
                out += [(module, a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "srlm"]
    return out


def test_every_import_goes_down_a_layer():
    wrong = []
    for importer, imported, line in imports():
        a, b = _folder(importer), _folder(imported)
        if imported == "srlm" or a == b or _rank(importer) == _rank(imported) == TOP:
            continue
        if _rank(imported) >= _rank(importer):
            wrong.append(f"{MODULES[importer]}:{line}: {importer} ({a}) imports {imported} ({b})")
    assert wrong == []


def test_evaluation_never_imports_training_or_a_method():
    wrong = [f"{importer} imports {imported}" for importer, imported, _ in imports()
             if _folder(importer) == "evaluation" and (imported.startswith(TRAINING) or _folder(imported) == "methods")]
    assert wrong == []


def test_folders_are_packages():
    for folder in RANK:
        assert f"srlm.{folder}" in MODULES, f"src/srlm/{folder}/__init__.py missing"


@pytest.fixture(scope="module")
def stage_modules() -> dict[str, set[str]]:
    """Stage name -> the srlm modules its row's run function imports (read from stages.py)."""
    from srlm.stages import STAGES

    with open(MODULES["srlm.stages"], encoding="utf-8") as f:
        funcs = {n.name: n for n in ast.parse(f.read()).body if isinstance(n, ast.FunctionDef)}
    out = {}
    for stage in STAGES:
        fn = funcs[stage.run.__name__]
        out[stage.name] = {f"{n.module}.{a.name}" for n in ast.walk(fn) if isinstance(n, ast.ImportFrom)
                           for a in n.names}
    return out


def test_each_row_runs_in_the_module_its_name_says(stage_modules):
    """A loop row's work is in srlm/loop/<stage name>.py, a method's row's in
    srlm/methods/<first of its methods>.py: one file to open per stage."""
    from srlm.stages import STAGES

    for stage in STAGES:
        home = f"srlm.methods.{stage.methods[0]}" if stage.methods else f"srlm.loop.{stage.name}"
        assert home in MODULES, (stage.name, home)
        assert stage_modules[stage.name] == {home}, (stage.name, stage_modules[stage.name])
