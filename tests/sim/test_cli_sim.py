"""``tradebridge sim``: the foreground server, Redis token seeding, and the admin commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from typer.testing import CliRunner

from tradebridge.cli.main import app
from tradebridge.domain.contracts import front_month
from tradebridge.store.embedded import EmbeddedRedis, free_port

runner = CliRunner()
StartSim = Callable[..., "SimProcess"]


@dataclass
class SimProcess:
    """A ``tradebridge sim`` child process and where its output goes."""

    process: subprocess.Popen[bytes]
    url: str
    output: Path

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")


def tradebridge(*args: str) -> list[str]:
    return [sys.executable, "-m", "tradebridge", *args]


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[StartSim]:
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        port = free_port()
        output = tmp_path / f"sim-{port}.log"
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        with output.open("wb") as sink:
            process = subprocess.Popen(
                tradebridge("sim", "--port", str(port), *args),
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )
        sim = SimProcess(process, f"http://127.0.0.1:{port}", output)
        started.append(sim)
        # A bound, not a wait: a quiet machine answers in ~2 s, but with the CPU saturated
        # (the suite beside other work, load 7 on 2 cores) building the app took over 20 s.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"tradebridge sim exited {process.returncode}:\n{sim.text()}")
            try:
                if httpx.get(f"{sim.url}/_sim/health", timeout=1).status_code == 200:
                    return sim
            except httpx.TransportError:
                time.sleep(0.05)
        pytest.fail(f"tradebridge sim did not answer:\n{sim.text()}")

    yield start
    for sim in started:
        sim.process.send_signal(signal.SIGINT)
        try:
            sim.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.process.kill()
            sim.process.wait()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """One simulator process for the admin-command tests, started from a TOML file."""
    directory = tmp_path_factory.mktemp("sim")
    config = directory / "tradebridge.toml"
    config.write_text('[sim]\nport = 1\ncapitalised_enums = "http_404"\n', encoding="utf-8")
    port = free_port()
    output = directory / "sim.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            tradebridge("sim", "--config", str(config), "--port", str(port), "--latency-ms", "1"),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    sim = SimProcess(process, f"http://127.0.0.1:{port}", output)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{sim.url}/_sim/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"tradebridge sim did not start:\n{sim.text()}")
            time.sleep(0.05)
    yield sim
    process.send_signal(signal.SIGINT)
    process.wait(timeout=10)


def bridge_login(url: str) -> str:
    payload = httpx.post(f"{url}/authorize", data={"login": "demo", "password": "demo"}).json()
    token: str = payload["d"]["access_token"]
    return token


# --- help -----------------------------------------------------------------------------------


def test_sim_help_lists_options_and_subcommands() -> None:
    result = subprocess.run(
        tradebridge("sim", "--help"),
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    for needle in ("--port", "--redis-url", "--token-key", "--capitalised-enums", "fault", "price"):
        assert needle in result.stdout


def test_sim_fault_help_lists_fault_switches() -> None:
    result = runner.invoke(app, ["sim", "fault", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for needle in ("--latency-ms", "--drop-after-accept", "--missing-route", "--reset", "--url"):
        assert needle in result.output


# --- the foreground server ------------------------------------------------------------------


def test_sim_process_serves_bridge_and_prints_urls_and_accounts(running: SimProcess) -> None:
    token = bridge_login(running.url)
    answer = httpx.get(f"{running.url}/accounts", headers={"Authorization": f"Bearer {token}"})
    assert answer.json()["d"][0]["id"] == "D100001"
    banner = running.text()
    for needle in (f"{running.url}/v1", "/v1/websocket", "D100001", "PAAPEX1361890000010"):
        assert needle in banner
    assert "curl" in banner
    assert token not in banner


def test_sim_process_applies_config_file_switches(running: SimProcess) -> None:
    token = bridge_login(running.url)
    answer = httpx.post(
        f"{running.url}/accounts/D100001/orders",
        data={"instrument": "MNQZ6", "qty": "1", "side": "Buy", "type": "market"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 404  # capitalised_enums = "http_404" from the file
    assert httpx.get(f"{running.url}/_sim/faults").json()["latency_ms"] == 1  # from the flag


def test_sim_bad_config_file_exits_2_with_message(tmp_path: Path) -> None:
    config = tmp_path / "sim.json"
    config.write_text('{"capitalised_enums": "sometimes"}', encoding="utf-8")
    result = runner.invoke(app, ["sim", "--config", str(config)])
    assert result.exit_code == 2
    assert "capitalised_enums" in result.output
    assert "Traceback" not in result.output


# --- steering a running simulator ------------------------------------------------------


def test_sim_fault_changes_and_resets_running_simulator(running: SimProcess) -> None:
    result = runner.invoke(app, ["sim", "fault", "--url", running.url, "--latency-ms", "50"])
    assert result.exit_code == 0, result.output
    assert "latency_ms" in result.output
    assert httpx.get(f"{running.url}/_sim/faults").json()["latency_ms"] == 50
    result = runner.invoke(app, ["sim", "fault", "--url", running.url, "--reset"])
    assert result.exit_code == 0, result.output
    assert httpx.get(f"{running.url}/_sim/faults").json()["latency_ms"] == 0


def test_sim_fault_missing_routes_repeatable_flag_sets_patterns(running: SimProcess) -> None:
    args = ["--missing-route", "*/ldeps", "--missing-route", "/v1/Command/deps"]

    result = runner.invoke(app, ["sim", "fault", "--url", running.url, *args])

    assert result.exit_code == 0, result.output
    faults = httpx.get(f"{running.url}/_sim/faults").json()
    assert faults["missing_routes"] == ["*/ldeps", "command/deps"]


def test_sim_fault_invalid_value_exits_1_with_server_message(running: SimProcess) -> None:
    result = runner.invoke(
        app, ["sim", "fault", "--url", running.url, "--inject-failure-count", "-1"]
    )
    assert result.exit_code != 0
    assert "Traceback" not in result.output


def test_sim_price_moves_quote_of_running_simulator(running: SimProcess) -> None:
    symbol = front_month("MNQ", datetime.now(UTC).date()).name
    result = runner.invoke(app, ["sim", "price", symbol, "21000.25", "--url", running.url])
    assert result.exit_code == 0, result.output
    token = bridge_login(running.url)
    quotes = httpx.get(
        f"{running.url}/quotes",
        params={"symbols": symbol},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["d"]
    assert quotes[0]["v"]["lp"] == 21000.25


def test_sim_price_unknown_symbol_exits_1_with_message(running: SimProcess) -> None:
    result = runner.invoke(app, ["sim", "price", "FOOZ6", "1", "--url", running.url])
    assert result.exit_code == 1
    assert "FOOZ6" in result.output


def test_sim_state_prints_counters(running: SimProcess) -> None:
    bridge_login(running.url)
    result = runner.invoke(app, ["sim", "state", "--url", running.url])
    assert result.exit_code == 0, result.output
    assert "logins" in result.output
    assert "orders" in result.output


@pytest.mark.parametrize(
    "command",
    [["fault", "--latency-ms", "5"], ["fault"], ["state"], ["price", "MNQZ6", "1"]],
)
def test_sim_admin_command_without_simulator_exits_1_with_message(command: list[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        tradebridge("sim", *command, "--url", dead),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"no simulator answers at {dead}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# --- Redis token seeding -----------------------------------------------------------------


def test_sim_redis_url_writes_token_keys_with_ttl_and_working_token(
    start_sim: StartSim, redis_server: EmbeddedRedis
) -> None:
    sim = start_sim("--redis-url", redis_server.url, "--token-key", "test1:{account_name}")
    client = redis.Redis.from_url(redis_server.url)
    try:
        names = ["DEMO0000001", "DEMO0000002", "PAAPEX1361890000010", "PAAPEX1361890000011"]
        values = {name: client.get(f"test1:{name}") for name in names}
        assert all(values.values()), values
        demo = json.loads(values["DEMO0000001"])  # type: ignore[arg-type]
        assert json.loads(values["DEMO0000002"]) == demo  # type: ignore[arg-type]
        assert demo["kind"] == "native"
        assert demo["env"] == "demo"
        assert demo["userId"] == 1
        assert demo["mdAccessToken"]
        expires = datetime.fromisoformat(demo["expirationTime"])
        ttl_ms = client.pttl("test1:DEMO0000001")
        lifetime_ms = (expires - datetime.now(UTC)).total_seconds() * 1000
        assert 0 < ttl_ms < lifetime_ms
        headers = {"Authorization": f"Bearer {demo['accessToken']}"}
        assert httpx.get(f"{sim.url}/v1/account/list", headers=headers).status_code == 200
        accounts = httpx.get(f"{sim.url}/accounts", headers=headers).json()["d"]
        assert [a["id"] for a in accounts] == ["D100001", "D100002"]
        assert demo["accessToken"] not in sim.text()
    finally:
        client.close()


def test_sim_redis_tokens_are_renewed_before_they_expire(
    start_sim: StartSim, redis_server: EmbeddedRedis
) -> None:
    sim = start_sim(
        "--redis-url", redis_server.url, "--token-key", "test2:{bridge_id}", "--token-lifetime", "3"
    )
    client = redis.Redis.from_url(redis_server.url)
    try:
        first = json.loads(client.get("test2:D100001"))  # type: ignore[arg-type]
        deadline = time.monotonic() + 8
        current = first
        while current["accessToken"] == first["accessToken"] and time.monotonic() < deadline:
            time.sleep(0.1)
            raw = client.get("test2:D100001")
            assert raw is not None, "the key expired before it was renewed"
            current = json.loads(raw)
        assert current["accessToken"] != first["accessToken"]
        assert current["expirationTime"] > first["expirationTime"]
        headers = {"Authorization": f"Bearer {current['accessToken']}"}
        assert httpx.get(f"{sim.url}/accounts", headers=headers).status_code == 200
        state = httpx.get(f"{sim.url}/_sim/state").json()
        assert state["logins"] == 2  # one per user; renewals open no new session
    finally:
        client.close()


def test_sim_tokens_expire_refuses_old_tokens_and_rewrites_redis_with_fresh_ones(
    start_sim: StartSim, redis_server: EmbeddedRedis
) -> None:
    sim = start_sim("--redis-url", redis_server.url, "--token-key", "test3:{account_name}")
    client = redis.Redis.from_url(redis_server.url)
    try:
        keys = ("test3:DEMO0000001", "test3:PAAPEX1361890000010")  # one per user
        olds = [json.loads(client.get(key)) for key in keys]  # type: ignore[arg-type]
        answer = httpx.post(f"{sim.url}/_sim/tokens/expire")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"expired_sessions": 2, "keys_rewritten": 4}
        freshes = [json.loads(client.get(key)) for key in keys]  # type: ignore[arg-type]
        for old, fresh in zip(olds, freshes, strict=True):
            assert fresh["accessToken"] != old["accessToken"]
        old, fresh = olds[0], freshes[0]
        for token, status in ((old, 401), (fresh, 200)):
            headers = {"Authorization": f"Bearer {token['accessToken']}"}
            assert httpx.get(f"{sim.url}/v1/account/list", headers=headers).status_code == status
            assert httpx.get(f"{sim.url}/accounts", headers=headers).status_code == status
    finally:
        client.close()


def test_sim_tokens_expire_without_rewrite_leaves_the_dead_tokens_in_redis(
    start_sim: StartSim, redis_server: EmbeddedRedis
) -> None:
    sim = start_sim("--redis-url", redis_server.url, "--token-key", "test4:{account_name}")
    client = redis.Redis.from_url(redis_server.url)
    try:
        old = json.loads(client.get("test4:DEMO0000001"))  # type: ignore[arg-type]
        answer = httpx.post(f"{sim.url}/_sim/tokens/expire", params={"rewrite": "false"})
        kept = json.loads(client.get("test4:DEMO0000001"))  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {kept['accessToken']}"}
        refused = httpx.get(f"{sim.url}/v1/account/list", headers=headers).status_code
    finally:
        client.close()

    assert answer.json() == {"expired_sessions": 2, "keys_rewritten": 0}
    assert kept == old
    assert refused == 401


def test_sim_redis_unreachable_exits_1_with_message() -> None:
    dead = f"redis://:secret@127.0.0.1:{free_port()}/0"
    port = free_port()
    result = subprocess.run(
        tradebridge("sim", "--port", str(port), "--redis-url", dead),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert "cannot write tokens to Redis" in result.stderr
    assert "secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_sim_port_taken_exits_1_and_leaves_redis_tokens_alone(
    running: SimProcess, redis_server: EmbeddedRedis
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("token:DEMO0000001", "held-by-the-running-simulator")
    try:
        port = running.url.rsplit(":", 1)[1]
        result = subprocess.run(
            tradebridge("sim", "--port", port, "--redis-url", redis_server.url),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
        assert "Traceback" not in result.stderr
        assert client.get("token:DEMO0000001") == b"held-by-the-running-simulator"
    finally:
        client.delete("token:DEMO0000001")
        client.close()
