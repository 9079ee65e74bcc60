"""AdaMod Lab's REST service: the FastAPI app (create_app), its settings and the adamod-lab CLI."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
