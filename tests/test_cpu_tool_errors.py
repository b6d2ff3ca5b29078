"""The host's measurement and calibration tools stop on bad input with an argparse error that names the
argument and what is allowed, before any fit or timing starts (no traceback, nothing measured and lost)."""

from __future__ import annotations

import json

import pytest

from simsparse import calibrate_cpu, execute_cpu


def _error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2  # argparse's usage error, not a crash
    return capsys.readouterr().err


def test_calibrate_cpu_names_a_missing_file(tmp_path, capsys):
    gone = tmp_path / "gone.jsonl"
    assert f"files: no such file: {gone}" in _error(calibrate_cpu.main, [str(gone)], capsys)
    err = _error(calibrate_cpu.main, ["--residual", "--cross-fit", str(tmp_path / "cf.json")], capsys)
    assert "--cross-fit: no such file" in err


def test_calibrate_cpu_wants_a_cpu_spec(capsys):
    err = _error(calibrate_cpu.main, ["--ceiling", "--spec", "h200"], capsys)
    assert "--spec: 'h200' is not a CPU" in err and "host" in err and "snapdragon-835" in err
    assert "unknown name 'nohw'" in _error(calibrate_cpu.main, ["--spec", "nohw"], capsys)


@pytest.mark.parametrize("content, says", [
    ("not json", "not JSON"),
    (json.dumps({"op": {}}), "expected the list"),
    (json.dumps([{"type": "machine"}, {"op": {"name": "add"}}]), "[1]: missing cold"),
])
def test_calibrate_cpu_rejects_a_file_that_is_no_eltwise_timing(tmp_path, capsys, content, says):
    f = tmp_path / "eltwise.json"
    f.write_text(content)
    err = _error(calibrate_cpu.main, ["--eltwise", str(f)], capsys)
    assert f"--eltwise: {f}" in err and says in err


def test_execute_cpu_checks_every_case_before_timing(tmp_path, capsys):
    out = tmp_path / "runs.json"
    err = _error(execute_cpu.main, ["resnet18", "nonet", "--out", str(out)], capsys)
    assert "nonet dense: workload: got 'nonet'" in err and "resnet18" in err  # the allowed names
    assert "density: got 1.5" in _error(execute_cpu.main, ["resnet18", "--pattern", "unstructured@1.5"], capsys)
    # a network with an op the executor has no step for (BERT's embedding gather)
    assert "not supported by the executor" in _error(execute_cpu.main, ["bert-base"], capsys)
    assert not out.exists()  # nothing was timed: resnet18 was not run before the bad name stopped it
