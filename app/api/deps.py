"""Typed access to what the lifespan built.

Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
request for what is an attribute read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.chat.admission import Admission
from app.chat.server import ChatServer
from app.chat.shutdown import StreamCutter
from app.settings import Settings


async def get_chat_server(request: Request) -> ChatServer:
    server: ChatServer = request.app.state.chat_server
    return server


async def get_admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_stream_cutter(request: Request) -> StreamCutter:
    cutter: StreamCutter = request.app.state.stream_cutter
    return cutter


AdmissionDep = Annotated[Admission, Depends(get_admission)]
StreamCutterDep = Annotated[StreamCutter, Depends(get_stream_cutter)]
ChatServerDep = Annotated[ChatServer, Depends(get_chat_server)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
