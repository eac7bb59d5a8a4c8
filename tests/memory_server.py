"""A small client for the real MCP memory server, for tests.

The server (``@modelcontextprotocol/server-memory``, pinned in package.json and
installed by ``npm ci``) speaks newline-delimited JSON-RPC on stdio. It answers
requests concurrently, so a write followed by a read without waiting can be
answered read-first: this client sends one request and waits for its reply
before the next. Every wait has a timeout, so a hung server fails the test
instead of hanging it.

The server reads its file anew on every tool call and keeps nothing in memory,
so a test may change the file between calls of one server.

Missing ``node`` or a missing ``node_modules`` raise `ServerUnavailable`: tests
that need the server fail, never skip, so CI cannot pass without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypedDict, cast

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_PACKAGE = REPO_ROOT / "node_modules" / "@modelcontextprotocol" / "server-memory"
SERVER_SCRIPT = SERVER_PACKAGE / "dist" / "index.js"
PROTOCOL_VERSION = "2025-06-18"
TIMEOUT = 10.0  # seconds for one reply; a call takes milliseconds, node's start well under 1 s


class Entity(TypedDict):
    name: str
    entityType: str
    observations: list[str]


# "from" is a Python keyword, so this TypedDict needs the functional form.
Relation = TypedDict("Relation", {"from": str, "to": str, "relationType": str})


class Graph(TypedDict):
    entities: list[Entity]
    relations: list[Relation]


class ServerUnavailable(RuntimeError):
    """node or the server's package is missing: the tests cannot run here."""


class ServerError(RuntimeError):
    """The server broke the protocol: it exited, timed out or answered a JSON-RPC error."""


class ToolError(RuntimeError):
    """A tool call answered with ``isError``; the message is the server's text."""


def server_command(script: Path | None = None) -> list[str]:
    """The argv that starts the pinned server, or another ``script`` that npm ci installed;
    `ServerUnavailable` if it cannot."""
    script = SERVER_SCRIPT if script is None else script
    node = shutil.which("node")
    if node is None:
        raise ServerUnavailable("`node` is not on PATH: install Node 20+, then run `npm ci`")
    if not script.is_file():
        raise ServerUnavailable(
            f"{script} is missing: run `npm ci` in {REPO_ROOT} (or `./install.sh --test`)"
        )
    return [node, str(script)]


class MemoryServer:
    """One server process over ``path``; use as a context manager, or `start` and `close`.

    ``command`` starts another server that takes its file from MEMORY_FILE_PATH and
    speaks MCP on stdio (another writer of memory files); by default, the pinned one.
    """

    def __init__(
        self, path: Path, *, timeout: float = TIMEOUT, command: Sequence[str] | None = None
    ) -> None:
        # The server resolves a relative MEMORY_FILE_PATH against its own folder.
        self.path = Path(path).resolve()
        self.timeout = timeout
        self.command = None if command is None else list(command)
        self._process: subprocess.Popen[bytes] | None = None
        # Lines are read by threads so each wait can time out (a pipe read cannot).
        self._replies: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._next_id = 0
        self._closed = False

    # --- lifecycle ---------------------------------------------------------

    def __enter__(self) -> MemoryServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> MemoryServer:
        """Start the process and complete the MCP handshake."""
        if self._process is not None:
            raise ServerError("this server is already started")
        env = dict(os.environ, MEMORY_FILE_PATH=str(self.path))
        self._process = subprocess.Popen(
            server_command() if self.command is None else self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._spawn(self._pump_stdout, self._process.stdout)
        self._spawn(self._pump_stderr, self._process.stderr)
        try:
            self.request(
                "initialize",
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "crdt-merge-driver-tests", "version": "0"},
                },
            )
            self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close stdin (the server then exits), wait, and kill it if it does not."""
        process = self._process
        if process is None or self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for thread in self._threads:
            thread.join(timeout=self.timeout)
        self._threads.clear()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    @property
    def stderr(self) -> str:
        """What the server printed on stderr so far."""
        return b"".join(self._stderr).decode("utf-8", "replace")

    # --- JSON-RPC ----------------------------------------------------------

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its reply; the reply's ``result``."""
        self._next_id += 1
        request_id = self._next_id
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while True:
            message = self._receive(method)
            if message.get("id") != request_id:
                self._answer_server(message)
                continue
            if "error" in message:
                raise ServerError(f"{method} failed: {message['error']}")
            return cast(dict[str, Any], message["result"])

    def _send(self, message: dict[str, Any]) -> None:
        process = self._started()
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(message).encode() + b"\n")
            process.stdin.flush()
        except BrokenPipeError as error:
            raise self._died(f"sending {message.get('method')}") from error

    def _receive(self, method: str) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=self.timeout)
        except queue.Empty:
            raise ServerError(
                f"no reply to {method} within {self.timeout:g}s; server stderr:\n{self.stderr}"
            ) from None
        if line is None:
            raise self._died(f"waiting for the reply to {method}")
        return cast(dict[str, Any], json.loads(line))

    def _answer_server(self, message: dict[str, Any]) -> None:
        # Notifications need no answer; a request from the server (none is
        # expected, the client declares no capabilities) gets "method not found"
        # so the server does not wait on us.
        if "method" in message and "id" in message:
            error = {"code": -32601, "message": "not supported by the test client"}
            self._send({"jsonrpc": "2.0", "id": message["id"], "error": error})

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise ServerError("the server is not started: use `with MemoryServer(path)` or start()")
        if self._closed:
            raise ServerError("the server is closed")
        return self._process

    def _died(self, doing: str) -> ServerError:
        process = self._process
        assert process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self.timeout)
        for thread in self._threads:  # let the pumps read stderr to its end
            thread.join(timeout=self.timeout)
        return ServerError(
            f"the server exited (code {process.returncode}) while {doing}; stderr:\n{self.stderr}"
        )

    def _spawn(self, target: Callable[[IO[bytes]], None], stream: IO[bytes]) -> None:
        thread = threading.Thread(target=target, args=(stream,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _pump_stdout(self, stream: IO[bytes]) -> None:
        for line in stream:
            if line.strip():
                self._replies.put(line)
        self._replies.put(None)  # end of output: the server exited

    def _pump_stderr(self, stream: IO[bytes]) -> None:
        # Drained continuously so a chatty server never blocks on a full pipe.
        for chunk in stream:
            self._stderr.append(chunk)

    # --- tools -------------------------------------------------------------

    def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call ``tool``; its result (content, structuredContent). `ToolError` on isError."""
        result = self.request("tools/call", {"name": tool, "arguments": arguments})
        if result.get("isError"):
            raise ToolError(f"{tool}: {_text(result)}")
        return result

    def create_entities(self, entities: Sequence[Entity]) -> list[Entity]:
        """Create entities; the ones actually created (existing names are skipped)."""
        return cast(list[Entity], self._json(self.call("create_entities", entities=list(entities))))

    def create_relations(self, relations: Sequence[Relation]) -> list[Relation]:
        """Create relations; the new ones (exact duplicates are skipped)."""
        created = self._json(self.call("create_relations", relations=list(relations)))
        return cast(list[Relation], created)

    def add_observations(self, observations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add ``{"entityName", "contents"}``; per entity, the observations added."""
        added = self._json(self.call("add_observations", observations=list(observations)))
        return cast(list[dict[str, Any]], added)

    def delete_entities(self, names: Sequence[str]) -> None:
        """Delete entities and every relation from or to them."""
        self.call("delete_entities", entityNames=list(names))

    def delete_observations(self, deletions: Sequence[dict[str, Any]]) -> None:
        """Delete ``{"entityName", "observations"}``."""
        self.call("delete_observations", deletions=list(deletions))

    def delete_relations(self, relations: Sequence[Relation]) -> None:
        self.call("delete_relations", relations=list(relations))

    def read_graph(self) -> Graph:
        """The whole graph as an agent sees it (the text content, parsed)."""
        return cast(Graph, self._json(self.call("read_graph")))

    def search_nodes(self, query: str) -> Graph:
        return cast(Graph, self._json(self.call("search_nodes", query=query)))

    def open_nodes(self, names: Sequence[str]) -> Graph:
        return cast(Graph, self._json(self.call("open_nodes", names=list(names))))

    @staticmethod
    def _json(result: dict[str, Any]) -> Any:
        # The text content is what a model reads; structuredContent carries the
        # same data (wrapped in an object for list results), checked in
        # tests/test_memory_server.py. Parsing the text keeps us honest about it.
        return json.loads(_text(result))


def _text(result: dict[str, Any]) -> str:
    content = result.get("content") or [{}]
    return str(content[0].get("text", ""))


ServerFactory = Callable[[Path], MemoryServer]


@contextlib.contextmanager
def server_pool() -> Iterator[ServerFactory]:
    """A function that starts servers over given files; all are closed on exit."""
    servers: list[MemoryServer] = []

    def start(path: Path) -> MemoryServer:
        server = MemoryServer(path).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()
