"""The package list, beside pyproject.toml (which cannot both discover packages and add mapped ones): the
gateway's packages, and the repository's run-time data directories (mappings/, profiles/, policy/: the
project's layout names them at the top level) as gateway._data.mappings, .profiles and .policy
(pyproject.toml maps them; their subdirectories are data-only subpackages). A wheel carries them under
gateway/_data/; the editable install (`pip install -e .`, `make`) maps the same names onto the checkout's
directories. The gateway reads them through importlib.resources (gateway/resources.py) either way."""

from setuptools import find_namespace_packages, find_packages, setup

DATA = {f"gateway._data.{name}": name for name in ("mappings", "profiles", "policy")}


def data_packages() -> list[str]:
    found = []
    for package, directory in DATA.items():
        found.append(package)
        found += [
            f"{package}.{sub}" for sub in find_namespace_packages(where=directory, exclude=["*__pycache__*"])
        ]
    return found


# gateway/definitions holds data only (no __init__.py): named, so setuptools packages it knowingly
setup(packages=[*find_packages(include=["gateway", "gateway.*"]), "gateway.definitions", *data_packages()])
