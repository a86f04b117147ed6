"""solo-ext: regularized masked-autoencoder pretraining in solo-learn's conventions."""

__version__ = "0.2.0"
