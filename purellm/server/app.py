"""The FastAPI application: routes, middleware and error handlers wired together."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from purellm.server import serving_chat, serving_completions, serving_models
from purellm.server.auth import AuthMiddleware
from purellm.server.errors import install_error_handlers
from purellm.server.state import ServerState


def create_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):  # the model loads once the port listens (http_server)
        yield
        await asyncio.to_thread(state.shutdown)  # the engine thread ends before the loop does

    app = FastAPI(title="purellm", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = state
    install_error_handlers(app)
    _routes(app)
    if state.config.api_keys:
        app.add_middleware(AuthMiddleware, keys=state.config.api_keys)
    if state.config.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(state.config.allowed_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app


def _routes(app: FastAPI) -> None:
    route = app.add_api_route
    route("/v1/chat/completions", serving_chat.create_chat_completion, methods=["POST"])
    route("/v1/completions", serving_completions.create_completion, methods=["POST"])
    route("/v1/models", serving_models.list_models, methods=["GET"])
    route("/v1/models/{model_id:path}", serving_models.get_model, methods=["GET"])
    route("/tokenize", serving_models.tokenize, methods=["POST"])
    route("/detokenize", serving_models.detokenize, methods=["POST"])
    route("/version", serving_models.version, methods=["GET"])
    route("/health", serving_models.health, methods=["GET"])
    route("/metrics", serving_models.metrics, methods=["GET"])
