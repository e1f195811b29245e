"""The provider's version (also in pyproject.toml; tests check they agree)."""

__version__ = "1.0.0"
