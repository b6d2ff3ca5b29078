"""The README stays true: its Python example runs, CI runs its test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_python_example_runs():
    code = re.search(r"## Python\n\n```python\n(.*?)```", README, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, "README.md", "exec"), {})


def test_quick_start_has_two_commands_and_ci_runs_the_second():
    quick = README[README.index("## Quick start"):README.index("## Python")]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, re.S)
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].strip() in ci


def test_plot_is_reachable_after_a_plain_import():
    # the README's sweep line calls simsparse.plot.speedup_heatmap after `import simsparse` only
    import subprocess
    import sys

    code = "import simsparse; print(simsparse.plot.speedup_heatmap.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "speedup_heatmap"
