import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def package_version() -> str:
    """``__version__`` of solo_ext/__init__.py, read as text: importing the package here would
    need its dependencies before they are installed."""
    text = (HERE / "solo_ext" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE).group(1)


setup(
    name="solo-ext",
    version=package_version(),
    description="Regularized MAE pretraining (U-MAE, M-MAE/TCR, MAGMA) in solo-learn's conventions",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license_expression="MIT",
    license_files=["LICENSE"],
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    python_requires=">=3.11",
    packages=find_packages(include=["solo_ext", "solo_ext.*"]),
    # ImageNet-100's class list, read by python -m solo_ext.data.subset --classes imagenet100
    package_data={"solo_ext.data": ["imagenet100_classes.txt"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "lightning>=2.4,<3",
        "hydra-core>=1.3,<1.4",
        "omegaconf>=2.3,<2.4",
        "timm>=1.0",
        "torchmetrics>=1.0",
        "wandb>=0.17",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "numpy",
        "pillow",
        "safetensors>=0.4",
        # model cards of the exports (ModelCardData) and hf-hub:ORG/NAME weights sources
        "huggingface_hub>=0.23",
        "scipy>=1.10",
        # the config layer: Discriminator and Tag (tagged unions of schedules) need 2.5
        "pydantic>=2.5,<3",
        # sweep files (solo_ext/run/sweeps.py)
        "pyyaml>=5.1",
    ],
    extras_require={
        # the tests check exports against the real transformers; hypothesis: property tests;
        # mutmut: bench/mutation.sh (outside CI); mypy: CI's type checker
        "dev": [
            "pytest>=8",
            "ruff>=0.6",
            "transformers>=4.40",
            "hypothesis>=6.100",
            "mutmut>=3.3",
            "mypy>=2.4",
        ],
        # Hugging Face ViTMAE export (python -m solo_ext.export --to hf) and import
        "interop": ["transformers>=4.40"],
        "slurm": ["hydra-submitit-launcher>=1.2"],
        # data.format: dali (GPU decoding where CUDA is present, DALI's CPU back-end elsewhere)
        "dali": ["nvidia-dali-cuda120"],
    },
)
