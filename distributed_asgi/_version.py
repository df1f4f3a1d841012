"""The package version, alone in its module: any part can name it without importing the rest."""

__version__ = "0.1.0.dev0"
