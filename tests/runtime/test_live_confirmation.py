"""Live is deliberate: serve and up refuse ``environment = "live"`` without ``confirm_live``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from _support.runtime import NO_SETTINGS
from tradebridge.cli.main import app


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


@pytest.mark.parametrize("command", ["serve", "up"])
def test_live_without_confirm_live_refused_before_anything_starts(
    tmp_path: Path, command: str
) -> None:
    config = tmp_path / "tradebridge.toml"
    config.write_text('[tradovate]\nenvironment = "live"\n', encoding="utf-8")
    data_dir = tmp_path / "data"

    result = CliRunner().invoke(
        app,
        [command, "--config", str(config), "--data-dir", str(data_dir)],
        env=dict.fromkeys(NO_SETTINGS),
    )

    assert result.exit_code == 2
    assert "confirm_live = true" in result.stderr
    assert not data_dir.exists()  # no embedded database, Redis or simulator was started
