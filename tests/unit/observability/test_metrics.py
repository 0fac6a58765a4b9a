"""app/observability: the pool gauge on a real Postgres, the multiprocess directory, labels."""

from __future__ import annotations

import os
from pathlib import Path

import httpx2
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.observability.metrics import Metrics, forget_dead_processes, label_value
from app.observability.multiprocess_dir import (
    MULTIPROC_DIR_ENV,
    clear_metric_files,
    metrics_dir_for_workers,
)
from app.observability.tracing import otlp_traces_endpoint, provider_from_settings
from app.settings import Settings


def _gauge(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_the_pool_gauge_follows_checkouts(pg_engine: AsyncEngine) -> None:
    metrics = Metrics(registry=CollectorRegistry())
    metrics.watch_pool(pg_engine, limit=7)
    assert _gauge(metrics, "chatkit_db_pool_limit") == 7
    assert _gauge(metrics, "chatkit_db_pool_checked_out") == 0
    async with pg_engine.connect() as first:
        await first.execute(text("SELECT 1"))
        assert _gauge(metrics, "chatkit_db_pool_checked_out") == 1
        async with pg_engine.connect() as second:
            await second.execute(text("SELECT 1"))
            assert _gauge(metrics, "chatkit_db_pool_checked_out") == 2
        assert _gauge(metrics, "chatkit_db_pool_checked_out") == 1
    assert _gauge(metrics, "chatkit_db_pool_checked_out") == 0


def test_label_values_from_tool_names_stay_short_and_plain() -> None:
    assert label_value("add_task") == "add_task"
    assert label_value('x"}\n{evil') == "x____evil"
    assert len(label_value("t" * 500)) == 64
    assert label_value("") == "unknown"


def test_one_worker_and_no_directory_is_the_single_process_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    with metrics_dir_for_workers(1) as path:
        assert path is None
        assert MULTIPROC_DIR_ENV not in os.environ


def test_an_empty_variable_is_no_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, "")
    with metrics_dir_for_workers(1) as path:
        assert path is None
        assert MULTIPROC_DIR_ENV not in os.environ


def test_several_workers_get_a_fresh_directory_removed_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    with metrics_dir_for_workers(2) as path:
        assert path is not None
        assert os.environ[MULTIPROC_DIR_ENV] == path
        assert Path(path).is_dir() and not any(Path(path).iterdir())
        (Path(path) / "counter_123.db").write_bytes(b"x")
    assert MULTIPROC_DIR_ENV not in os.environ
    assert not Path(path).exists()


def test_a_given_directory_is_emptied_of_old_values_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("keep me")
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    with metrics_dir_for_workers(4) as path:
        assert path == str(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert tmp_path.is_dir()


def test_live_gauges_of_processes_that_died_are_dropped(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above Linux's pid_max default: no such process
    mine = tmp_path / f"gauge_livesum_{os.getpid()}.db"
    dead = tmp_path / f"gauge_livesum_{dead_pid}.db"
    counter = tmp_path / f"counter_{dead_pid}.db"
    for file in (mine, dead, counter):
        file.write_bytes(b"x")
    forget_dead_processes(str(tmp_path))
    assert mine.exists()
    assert not dead.exists()
    assert counter.exists()  # what a dead worker counted still counts
    clear_metric_files(tmp_path)
    assert not any(tmp_path.iterdir())


async def test_metrics_off_means_no_endpoint() -> None:
    app = create_app(Settings(metrics=False))
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://app"
    ) as http:
        response = await http.get("/metrics")
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


def test_tracing_is_off_without_an_endpoint_and_exports_to_v1_traces_with_one() -> None:
    assert provider_from_settings(Settings()) is None
    assert otlp_traces_endpoint("http://collector:4318") == "http://collector:4318/v1/traces"
    assert otlp_traces_endpoint("http://collector:4318/") == "http://collector:4318/v1/traces"
    provider = provider_from_settings(
        Settings(otel_exporter_otlp_endpoint="http://127.0.0.1:9", otel_service_name="svc-x")
    )
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "svc-x"
    finally:
        provider.shutdown()
