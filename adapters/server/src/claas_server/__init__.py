"""claas-server: the OpenAI-compatible continual-learning HTTP API for CLaaS.

``create_app(settings)`` builds the FastAPI app around a :class:`claas.Learner`;
``serve(settings, host=..., port=...)`` runs it with uvicorn.
"""

from __future__ import annotations

from claas_server.app import create_app
from claas_server.serve import serve

__all__ = ["create_app", "serve"]
