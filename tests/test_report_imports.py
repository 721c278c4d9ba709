"""headrot.report is a leaf: it draws what it is handed and imports nothing from the stages,
evaluate or train (the packages that compute); they import it, never the other way round."""
from __future__ import annotations

import ast
from pathlib import Path

import headrot.report

FORBIDDEN = ("headrot.stages", "headrot.evaluate", "headrot.train")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.append(node.module or "")
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_report_imports_nothing_from_stages_evaluate_or_train():
    files = sorted(Path(headrot.report.__file__).parent.glob("*.py"))
    assert {"grid.py", "plots.py", "html.py", "page.py", "contact_sheet.py", "trajectory_fit.py"} <= {f.name for f in files}
    bad = [(f.name, name) for f in files for name in _imports(f)
           if any(name == p or name.startswith(p + ".") for p in FORBIDDEN)]
    assert bad == []


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    """The walk finds function-level imports too (where the old cycle hid)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from headrot.evaluate.plots import _png\n")
    assert "headrot.evaluate.plots" in _imports(probe)


# The drivers that write a run's or a training run's pictures: the stages, and the training loop,
# whose rank 0 draws each epoch's sample grid and loss curve into its checkpoint (headrot train is
# the training stage). Everything below them (model, maths, storage, evaluate's pure measure and
# aggregate) hands arrays and dicts up instead of drawing.
DRIVERS = ("headrot.stages", "headrot.train.loop")


def test_only_the_drivers_import_the_report_package():
    package = Path(headrot.report.__file__).parent.parent
    importers = set()
    for f in package.rglob("*.py"):
        module = ".".join(f.relative_to(package.parent).with_suffix("").parts)
        if module.startswith("headrot.report"):
            continue
        if any(n == "headrot.report" or n.startswith("headrot.report.") for n in _imports(f)):
            importers.add(module)
    assert importers, "the scan found no importer at all: it is not looking where the code is"
    strays = sorted(m for m in importers if not any(m == d or m.startswith(d + ".") for d in DRIVERS))
    assert strays == []
