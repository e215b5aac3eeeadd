"""One source of dependency truth: pyproject.toml declares every package the code imports, and
launch/constraints.txt pins each of them once; every installer (setup.sh, the Dockerfile, the cluster
YAMLs, the runtime env) takes its versions from there. Read from the files themselves, no network."""

from __future__ import annotations

import ast
import re
import shlex
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
FIRST_PARTY = {"maskgan_rl", "envs", "maskgan_rl_envs"}  # envs/ installs as maskgan_rl_envs


def declared() -> dict[str, Requirement]:
    """pyproject.toml's runtime dependencies, by canonical distribution name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def pins() -> dict[str, str]:
    """launch/constraints.txt: canonical name -> exact version."""
    found: dict[str, str] = {}
    for line in (LAUNCH / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert canonicalize_name(name) not in found, f"{name} pinned twice"
            found[canonicalize_name(name)] = version
    return found


def imported_top_level_modules(folders: list[Path]) -> set[str]:
    modules = set()
    for path in (p for folder in folders for p in folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_third_party_import_is_a_declared_dependency():
    third_party = imported_top_level_modules([ROOT / "maskgan_rl", ROOT / "envs"]) - FIRST_PARTY - set(sys.stdlib_module_names)
    assert {"torch", "ray", "yaml", "pandas"} <= third_party  # the scan sees imports at all
    distributions = metadata.packages_distributions()  # module -> the installed distributions providing it
    undeclared = {
        module: distributions.get(module) for module in third_party
        if not {canonicalize_name(d) for d in distributions.get(module, [])} & declared().keys()
    }
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"


def test_constraints_pin_each_dependency_once_within_its_declared_range():
    assert pins().keys() == declared().keys()
    for name, requirement in declared().items():
        assert requirement.specifier.contains(pins()[name]), (name, str(requirement.specifier), pins()[name])
    # gymnasium capped below its next major, whatever the pin.
    gymnasium = declared()["gymnasium"].specifier
    assert not gymnasium.contains("2.0") and not gymnasium.contains("2.0.0rc1", prereleases=True)


def test_constraints_are_the_versions_this_environment_was_installed_with():
    """launch/pin.py writes them from a working environment; setup.sh installs them (`-c`)."""
    for name, version in pins().items():
        installed = Version(metadata.version(name))
        assert installed.public.split("+")[0] == version, (name, str(installed), version)


def pip_installs(text: str) -> list[tuple[str, list[str]]]:
    """(command, the requirements it names) for every `pip install` in a shell, Dockerfile or YAML text:
    option values, file paths and shell expansions ($VAR) are not requirements."""
    commands = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = shlex.split(line, comments=True) if "pip" in line else []
        for i, word in enumerate(words):
            if word.endswith("pip") and words[i + 1:i + 2] == ["install"]:
                requirements, rest = [], iter(words[i + 2:])
                for arg in rest:
                    if arg in ("-r", "-c", "--index-url"):
                        next(rest)
                    elif not arg.startswith(("-", "$", ".")):
                        requirements.append(arg)
                commands.append((line.strip(), requirements))
    return commands


def test_every_installer_takes_its_versions_from_the_constraints():
    texts = {
        "setup.sh": (LAUNCH / "setup.sh").read_text(),
        "Dockerfile": (LAUNCH / "Dockerfile").read_text(),
        **{name: "\n".join(yaml.safe_load((LAUNCH / name).read_text())["setup_commands"])
           for name in ("cluster-aws.yaml", "cluster-onprem.yaml")},
    }
    for name, text in texts.items():
        installs = [(command, reqs) for command, reqs in pip_installs(text) if reqs != ["pip"]]  # (pip upgrading itself)
        assert installs, name
        for command, requirements in installs:
            assert "constraints.txt" in command or '"$TORCH_PIN"' in command, (name, command)
            for requirement in map(Requirement, requirements):  # a name and extras, never a version of its own
                assert not requirement.specifier, (name, command)
                assert requirement.extras <= declared()[canonicalize_name(requirement.name)].extras, (name, command)
    # setup.sh installs torch first, at the pinned version, read from the constraints file.
    assert "TORCH_PIN=$(grep -E '^torch==' launch/constraints.txt)" in texts["setup.sh"]
    # The cluster YAMLs copy the constraints file to where their setup commands read it.
    for name in ("cluster-aws.yaml", "cluster-onprem.yaml"):
        assert yaml.safe_load((LAUNCH / name).read_text())["file_mounts"]["~/maskgan-constraints.txt"] == "launch/constraints.txt"
    # The runtime env's per-job install, when enabled, reads the same file.
    assert "# pip: launch/constraints.txt" in (LAUNCH / "runtime_env.yaml").read_text()


def test_ray_images_and_the_kuberay_version_are_the_pinned_ray():
    ray = pins()["ray"]
    images = re.findall(r"rayproject/ray:([0-9.]+)-", (LAUNCH / "Dockerfile").read_text() + (LAUNCH / "cluster-aws.yaml").read_text())
    assert len(images) == 3 and set(images) == {ray}
    job = yaml.safe_load((LAUNCH / "kuberay-rayjob.yaml").read_text())
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray


def test_no_other_launch_file_or_readme_spells_a_version_of_a_dependency():
    """Install hints in prose and messages point at the constraints file rather than repeat a pin."""
    spelled = re.compile(rf"\b({'|'.join(map(re.escape, pins()))})(\[[a-z,]+\])?\s*(==|>=|~=|<=)\s*\d", re.I)
    files = [p for p in LAUNCH.iterdir() if p.is_file() and p.name != "constraints.txt"] + [ROOT / "README.md"]
    found = {p.name: m.group(0) for p in files for m in [spelled.search(p.read_text())] if m}
    assert not found, found
