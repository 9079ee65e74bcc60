"""The service's version, in a module of its own so that anything can import it cheaply."""

from __future__ import annotations

__version__ = "0.1.0"
