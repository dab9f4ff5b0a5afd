"""The module's own self-test, run the way ``Slicer --testing ... slicer.testing.runUnitTest([...], "MonaiDeployer")``
runs it: in testing mode, where Slicer answers its dialogs and nothing may be installed from the network."""

from __future__ import annotations

import sys

from .conftest import MODULE_FILE


def run_self_test(slicer_app) -> None:
    import slicer

    slicer_app.setTestingEnabled(True)
    try:
        slicer.testing.runUnitTest([str(MODULE_FILE.parent)], "MonaiDeployer")  # raises when a test fails
    finally:
        slicer_app.setTestingEnabled(False)
        slicer.mrmlScene.Clear(0)


def test_the_self_test_passes_in_testing_mode(slicer_app, capsys):
    run_self_test(slicer_app)
    report = capsys.readouterr().err
    # The loader also finds the imported base class, whose default test only warns (as in Slicer).
    assert "test_Panel (MonaiDeployer.MonaiDeployerTest.test_Panel)" in report
    assert "test_Scenarios (MonaiDeployer.MonaiDeployerTest.test_Scenarios)" in report
    assert "Ran 3 tests" in report and report.rstrip().endswith("OK") and "skipped" not in report


def test_the_self_test_skips_saying_why_where_slicer_has_no_torch(slicer_app, capsys, monkeypatch):
    """As on Slicer's build machines: torch and MONAI are hidden from this process (None in sys.modules is how
    Python marks a module that cannot be imported), and the self-test must skip, not fail."""
    for name in [name for name in sys.modules if name.split(".")[0] in ("torch", "monai")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "monai", None)
    run_self_test(slicer_app)
    report = capsys.readouterr().err
    reason = ("torch and monai not installed in Slicer's Python: the self-test runs the sample model, which needs "
              "torch (PyTorch extension) and MONAI")
    assert report.count(f'skipped "{reason}"') == 2, report
    assert "OK (skipped=2)" in report
