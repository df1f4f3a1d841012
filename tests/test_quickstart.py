"""docs/quickstart.md and README.md work as written: their files and commands are run.

A page's code blocks whose first line is ``# NAME.py`` are written to a folder; each console
block with a ``curl`` in it is a scenario: its commands are started there (servers in the
background), and every ``curl`` must print what the page shows below it. The only changes: the
Redis address (``localhost:6379``) is the test server's, and the edge listens on a free port.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from distributed_asgi.ops.redis_process import free_port

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "docs" / "quickstart.md", ROOT / "README.md"]
# Commands that serve until stopped, and how the edge among them is told its port.
SERVERS = {"uvicorn", "python", "distributed-asgi"}
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    return [(match[1], match[2]) for match in _FENCE.finditer(markdown)]


def files(markdown: str) -> dict[str, str]:
    named = {}
    for language, text in code_blocks(markdown):
        first = text.splitlines()[0] if text else ""
        if language in ("py", "python") and re.fullmatch(r"# [\w.]+\.py", first):
            named[first[2:]] = text
    return named


def scenarios(markdown: str) -> list[list[tuple[str, list[str]]]]:
    """Console blocks with a curl: each a list of (command, the lines it printed)."""
    found = []
    for language, text in code_blocks(markdown):
        if language != "console" or "$ curl " not in text:
            continue
        steps: list[tuple[str, list[str]]] = []
        for line in text.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        found.append(steps)
    return found


def test_the_pages_have_what_the_test_runs() -> None:
    quickstart = (ROOT / "docs" / "quickstart.md").read_text()
    assert set(files(quickstart)) == {"distributor.py", "worker.py", "hello.py"}
    assert len(scenarios(quickstart)) == 3
    readme = (ROOT / "README.md").read_text()
    assert set(files(readme)) == {"distributor.py", "worker.py"}
    assert len(scenarios(readme)) == 1


class Runner:
    def __init__(self, folder: Path, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self.redis_host, self.redis_port = str(parts.hostname), str(parts.port)
        self.folder = folder
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log = (folder / "output.log").open("wb")
        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # as on a fresh shell
        self.env = {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", "")}
        self.env["PYTHONUNBUFFERED"] = "1"

    def address(self, text: str) -> str:
        return text.replace("localhost", self.redis_host).replace("6379", self.redis_port)

    def write(self, name: str, source: str) -> None:
        (self.folder / name).write_text(self.address(source))

    def start(self, command: str) -> None:
        argv = shlex.split(self.address(command))
        if argv[0] == "python":
            argv[0] = sys.executable
        if argv[0] == "uvicorn" or argv[:2] in (
            ["distributed-asgi", "edge"],
            ["distributed-asgi", "up"],
        ):
            argv += ["--port", str(self.port)]
        self.processes.append(
            subprocess.Popen(
                argv, cwd=self.folder, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
            )
        )

    def curl(self, command: str, expected: list[str]) -> None:
        (url,) = shlex.split(command)[1:]
        assert url.startswith("http://127.0.0.1:8000/"), url
        url = url.replace(":8000", f":{self.port}")
        deadline = time.monotonic() + 60
        while True:
            for process in self.processes:
                assert process.poll() is None, f"{process.args!r} exited:\n{self.output()}"
            try:
                # A worker that is still starting: the edge answers 503 after its pickup timeout.
                response = httpx.get(url, timeout=30)
                if response.status_code != 503:
                    break
            except httpx.TransportError:  # the edge is not listening yet
                pass
            assert time.monotonic() < deadline, f"no answer from {url}:\n{self.output()}"
            time.sleep(0.2)
        assert response.status_code == 200, self.output()
        assert response.text.splitlines() == expected

    def stop(self) -> list[int | None]:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # Ctrl-C, as the page says
        codes: list[int | None] = []
        for process in self.processes:
            try:
                codes.append(process.wait(60))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(None)
        self.log.close()
        return codes

    def output(self) -> str:
        self.log.flush()
        return (self.folder / "output.log").read_text(errors="replace")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_runs_as_written(page: Path, tmp_path: Path, redis_url: str) -> None:
    markdown = page.read_text()
    for number, steps in enumerate(scenarios(markdown)):
        folder = tmp_path / f"scenario-{number}"
        folder.mkdir()
        runner = Runner(folder, redis_url)
        for name, source in files(markdown).items():
            runner.write(name, source)
        try:
            for command, printed in steps:
                program = shlex.split(command)[0]
                if program == "curl":
                    runner.curl(command, printed)
                else:
                    assert program in SERVERS, f"{page.name}: unexpected command {command!r}"
                    runner.start(command)
        finally:
            codes = runner.stop()
        # Ctrl-C is a clean stop for each of them (uvicorn, a Node, the CLI, up).
        assert codes == [0] * len(codes), f"{steps}: exit codes {codes}\n{runner.output()}"
