"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api.docs import install_docs
from service.api.errors import install_error_handlers
from service.api.routes import agents, devices, events, health, jobs, results
from service.api.state import AppState
from service.settings import Settings, get_settings
from service.store import BlobStore, check_schema, make_engine, make_session_factory

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

DESCRIPTION = """
Shrink a trained CNN to a budget. POST the architecture, its weights and a budget
(FLOPs, parameters, latency, allowed accuracy drop) to `/v1/jobs`; workers search
per-layer filter counts with Optuna, prune every candidate for real, fine-tune and
measure it. Poll the job (or stream `/events`), inspect the Pareto front, download the
pruned model as safetensors, ONNX, torch.export or TorchScript.

Every request needs `Authorization: Bearer <token>` (`inferprune token create`); a
tenant sees only its own jobs. Errors are `{"error": {"code", "message"}}`.
"""


def _warm_up() -> None:
    try:
        import models.cost  # noqa: F401
        import models.io  # noqa: F401
        import models.zoo  # noqa: F401
        import search.space  # noqa: F401
    except Exception:  # the first request will report it properly
        logger.debug("warm-up import failed", exc_info=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Return the API application.

    Nothing touches the database until startup: then the schema is checked (an outdated
    one stops the server with the command that fixes it) and the engine is kept on
    ``app.state.inferprune``. The app never trains: it validates uploads in a thread
    pool and records work for the workers.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        check_schema(engine, hint="inferprune db upgrade")
        app.state.inferprune = AppState(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            blobs=BlobStore(settings.artifact_root),
        )
        from service.uploads import remove_stale_uploads

        removed = remove_stale_uploads(settings.data_dir / "incoming")
        if removed:
            logger.info("removed %d upload(s) a killed server left behind", removed)
        # import the validation stack (torch, the zoo) in the background: the server
        # answers at once, and the first upload does not pay seconds of imports
        threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="inferprune",
        version="0.1.0",
        summary="Bayesian search of per-layer filter counts; physically pruned CNNs.",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN; ours are local
        redoc_url=None,
    )
    from service.uploads import BodySizeLimit

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    install_error_handlers(app)
    install_docs(app)
    for module in (jobs, results, events, devices, agents, health):
        app.include_router(module.router)
    return app
