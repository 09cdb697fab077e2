"""Servers and other processes the tests start: always bounded in time, always stopped, by their process group.

`MlflowServer` (`mlflow server`, the UI and its REST API, on a store) and `ModelServer` (`mlflow models serve`, a
model's REST endpoint) each run on a free localhost port in their own process group; as context managers they stop
whatever they started however the block ends. `run_bounded` is subprocess.run with a timeout that also ends the
command's children.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a process started with start_new_session=True, and its children, by its process (group) id."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_bounded(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run with a timeout that also ends the command's children (Chromium forks several)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc, grace=2.0)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    finally:
        try:  # helpers the command left behind in its process group (the group outlives its leader)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def venv_environment() -> dict[str, str]:
    """This process's environment with its Python's bin folder first on PATH: `mlflow models serve` starts `uvicorn` by
    name (exit 127, "uvicorn: not found", from a virtual environment that is not activated)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")]))
    return env


class _Server:
    """A server command on a free localhost port, in its own process group, its output in `log`; up once `health`
    answers 200. A context manager that always stops it."""

    name = "server"
    health = "/health"

    def __init__(self, folder: Path, start_timeout: float = 120.0):
        self.folder, self.start_timeout = folder, start_timeout
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"{self.name.replace(' ', '-')}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return venv_environment()

    def __enter__(self) -> Self:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=self.environment())
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}{self.health}", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not answer within {self.start_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            try:  # uvicorn workers left behind, if the server's own process went first
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def __exit__(self, *exc) -> None:
        self.stop()


class MlflowServer(_Server):
    """`mlflow server` (the UI and the REST API) on the tracking store `store`."""

    name = "mlflow server"

    def __init__(self, store: str, folder: Path, start_timeout: float = 120.0):
        super().__init__(folder, start_timeout)
        self.store = store

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.store, "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1"]


class ModelServer(_Server):
    """`mlflow models serve` of `model_uri` (runs:/…, models:/…) from the tracking store `store`, in this Python's
    environment (--env-manager local): the command a user runs, from the virtual environment's bin folder."""

    name = "mlflow models serve"
    health = "/ping"

    def __init__(self, store: str, model_uri: str, folder: Path, start_timeout: float = 180.0):
        super().__init__(folder, start_timeout)
        self.store, self.model_uri = store, model_uri

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", self.model_uri, "--env-manager",
                "local", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]

    def environment(self) -> dict[str, str]:
        return {**venv_environment(), "MLFLOW_TRACKING_URI": self.store}

    def invoke(self, body: dict, timeout: float = 60.0) -> tuple[int, dict]:
        """POST `body` to /invocations: the HTTP status and the JSON answer."""
        import json

        request = urllib.request.Request(f"{self.base}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
