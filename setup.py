from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="solo-ext",
    version="0.1.0",
    description="Regularized MAE pretraining (U-MAE, M-MAE/TCR, MAGMA) in solo-learn's conventions",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["solo_ext", "solo_ext.*"]),
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
        "scipy>=1.10",
    ],
    extras_require={
        # the tests check exports against the real transformers; hypothesis: property tests;
        # mutmut: bench/mutation.sh (outside CI)
        "dev": ["pytest>=8", "ruff>=0.6", "transformers>=4.40", "hypothesis>=6.100", "mutmut>=3.3"],
        # Hugging Face ViTMAE export (python -m solo_ext.export --to hf) and import
        "interop": ["transformers>=4.40"],
        "slurm": ["hydra-submitit-launcher>=1.2"],
        # data.format: dali (GPU decoding where CUDA is present, DALI's CPU back-end elsewhere)
        "dali": ["nvidia-dali-cuda120"],
    },
)
