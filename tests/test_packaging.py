"""`pip install` ships attention_jax alone; the --config files in experiments/ are its configs."""

import importlib
import importlib.util
import os
import pkgutil

import pytest
import setuptools
from absl import flags
from ml_collections import config_flags

from attention_jax import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = os.path.join(ROOT, "experiments", "configs")
CONFIG_NAMES = sorted(
    name[: -len(".py")]
    for name in os.listdir(CONFIG_FILES)
    if name.endswith(".py") and name != "__init__.py"
)


def test_only_attention_jax_is_installed():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        find = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
    # What the build finds: pyproject's `packages.find` also collects namespace packages.
    packages = setuptools.find_namespace_packages(where=ROOT, **find)
    assert "attention_jax.configs" in packages
    # A top-level `experiments` in site-packages would shadow a user project's own.
    assert {package.split(".")[0] for package in packages} == {"attention_jax"}


def test_every_package_config_has_its_config_file():
    modules = {module.name for module in pkgutil.iter_modules(configs.__path__)}
    assert sorted(modules - {"common"}) == CONFIG_NAMES  # common: the helpers, no get_config


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_file_is_the_package_config(name):
    # Loaded from its path, as config_flags loads it.
    path = os.path.join(CONFIG_FILES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"config_file_{name}", path)
    config_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config_file)
    package_config = importlib.import_module(f"attention_jax.configs.{name}")
    assert config_file.get_config is package_config.get_config


def test_config_flag_gives_the_package_config():
    from attention_jax.configs import mqar

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    flag_values(["prog", f"--config={CONFIG_FILES}/mqar.py:kind=local,size=tiny"])
    assert flag_values.config.to_dict() == mqar.get_config("kind=local,size=tiny").to_dict()
