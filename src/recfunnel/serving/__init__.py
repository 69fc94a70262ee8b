"""The recommendation HTTP service: a FastAPI app over a saved :class:`~recfunnel.runs.Run`.

    RECFUNNEL_TOKEN=... recfunnel serve runs/ml --port 8000 --workers 2

:func:`create_app` builds the app (every answer goes through ``Run.recommend``,
``Run.recommend_history`` and ``Run.similar_items``, so any model kept by the ``recommend()``
contract is served); :func:`serve` runs it with uvicorn. Needs the ``serve`` extra
(``pip install 'recfunnel[serve]'``). See ``docs/serving.md`` for the endpoints.
"""

from __future__ import annotations

from recfunnel.errors import RecfunnelError


def require_serving() -> None:
    """Raise a one-line error when the ``serve`` extra (FastAPI, uvicorn) is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise RecfunnelError(
            f"the HTTP service needs the 'serve' extra ({exc.name} is not installed); "
            "run: pip install 'recfunnel[serve]'"
        ) from None


def create_app(run_dir, token: str | None = None, **kwargs):
    """The FastAPI app serving ``run_dir`` (see :func:`recfunnel.serving.app.create_app`)."""
    require_serving()
    from recfunnel.serving.app import create_app as _create

    return _create(run_dir, token=token, **kwargs)


def serve(run_dir, **kwargs) -> None:
    """Run the service with uvicorn (see :func:`recfunnel.serving.server.serve`)."""
    require_serving()
    from recfunnel.serving.server import serve as _serve

    _serve(run_dir, **kwargs)


__all__ = ["create_app", "require_serving", "serve"]
