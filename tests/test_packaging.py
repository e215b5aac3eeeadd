"""What an install ships: every folder of the source tree, and the environments under a name of their own."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_list_covers_every_source_folder_and_ships_envs_as_maskgan_rl_envs():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # Listed by hand (envs/ needs its own install name), so a new subpackage must be added there.
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "maskgan_rl").rglob("*") if p.suffix in {".py", ".yaml"}}
    assert folders <= set(setuptools["packages"]), folders - set(setuptools["packages"])
    assert setuptools["package-dir"] == {"maskgan_rl_envs": "envs"} and "maskgan_rl_envs" in setuptools["packages"]
    assert not any(name == "envs" or name.startswith("envs.") for name in setuptools["packages"])
