"""The three tutorials of the documentation run, in their quick mode, and write their figures."""

import importlib.util
import pathlib

import pytest

TUTORIALS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tutorials"


@pytest.mark.parametrize("name", ["exact_gradient", "discrete_vae", "policy_gradient"])
def test_tutorial_runs(name, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(f"tutorial_{name}", TUTORIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path, quick=True)
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert "wrote" in capsys.readouterr().out
