"""The built wheel installs into a clean virtual environment (not editable) and runs the quickstart there.

Slow (a virtual environment and a JAX install): `make test-all` runs it, `make test` does not.
"""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_the_quickstart(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("logtrick-*.whl"))
    assert next((tmp_path / "dist").glob("logtrick-*.tar.gz"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel), "-c", str(ROOT / "constraints.txt")],
                   check=True, capture_output=True)
    readme = (ROOT / "README.md").read_text()
    quickstart = re.search(r"## Usage\n.*?```python\n(.*?)```", readme, re.S).group(1)
    out = subprocess.run([str(python), "-c", quickstart], check=True, capture_output=True, text=True, cwd=tmp_path)
    version = subprocess.run([str(python), "-c", "import logtrick; print(logtrick.__version__, logtrick.__file__)"],
                             check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert "site-packages" in version and version.split()[0] == re.search(
        r'__version__ = "([^"]+)"', (ROOT / "logtrick" / "__init__.py").read_text()).group(1), version
    assert out.returncode == 0
