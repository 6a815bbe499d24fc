"""Maps the top-level folders modalities/, rewards/, pipelines/ to mmgrpo.modalities, mmgrpo.rewards,
mmgrpo.pipelines (DESIGN.md), for both `pip install .` and `pip install -e .`."""

from setuptools import find_packages, setup

FOLDERS = {"mmgrpo": "mmgrpo", "mmgrpo.modalities": "modalities", "mmgrpo.rewards": "rewards",
           "mmgrpo.pipelines": "pipelines", "mmgrpo.configs": "configs"}

packages, package_dir = [], {}
for pkg, folder in FOLDERS.items():
    package_dir[pkg] = folder
    packages.append(pkg)
    packages += [f"{pkg}.{sub}" for sub in find_packages(folder) if not sub.startswith("mmgrpo")]

# configs/ ships as data (recipes the CLI can name as pkg://mmgrpo.configs/<family>/<recipe>.yaml)
setup(packages=sorted(set(packages)), package_dir=package_dir,
      package_data={"mmgrpo.configs": ["*.yaml", "*/*.yaml"]})
