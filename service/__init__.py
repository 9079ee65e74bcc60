"""AdaMod Lab's REST service: the FastAPI app (service.app), its settings, the adamod-lab CLI."""

from __future__ import annotations

from service.version import __version__

__all__ = ["__version__"]
