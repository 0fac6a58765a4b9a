"""Typed access to what the lifespan built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.chat.server import ChatServer
from app.settings import Settings
from app.store.usage import UsageStore


def get_chat_server(request: Request) -> ChatServer:
    server: ChatServer = request.app.state.chat_server
    return server


def get_usage(request: Request) -> UsageStore:
    usage: UsageStore = request.app.state.usage
    return usage


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ChatServerDep = Annotated[ChatServer, Depends(get_chat_server)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
UsageDep = Annotated[UsageStore, Depends(get_usage)]
