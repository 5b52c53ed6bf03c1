"""A stand-in for the Hugging Face Hub on 127.0.0.1, serving given files the way the Hub serves a model repo.

What huggingface_hub uses (checked against 0.17.3 and 2.4.0, the versions of upstream's pins and of .venvs/models):

- ``GET /api/models/{repo}[/revision/{rev}]``: the repo's info, ``sha`` and ``siblings`` (``HfApi.model_info``).
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: a small (git) file answers 200 with ``ETag`` (its git blob hash),
  ``Content-Length`` and ``X-Repo-Commit``. A large (LFS) file answers ``302`` with ``Location`` on the "CDN", a
  second server on another port (another origin, which huggingface_hub does not follow for HEAD, as with the real
  CDN), ``X-Linked-Etag`` (its sha256), ``X-Linked-Size`` and ``X-Repo-Commit``.
- ``GET /lfs/{sha256}`` on the CDN: the bytes, a ``Range: bytes=N-`` request answered ``206`` with ``Content-Range``.
- Unknown repos, revisions and files: 404 with the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``), which huggingface_hub turns into its own errors.

Every request is logged (method, path, Range header). ``drop_once[path] = n`` cuts the first full GET of that file
after n bytes (headers promise all of it; the connection is then closed), as a broken connection would.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".bin", ".ckpt", ".safetensors")
"""Files the Hub keeps in LFS (its .gitattributes for model repos): served through the CDN."""
REVISION = "main"


@dataclass(frozen=True)
class Served:
    """One request the stand-in answered."""

    server: str
    """``hub`` or ``cdn``."""
    method: str
    path: str
    range: str | None


@dataclass
class Repo:
    files: Mapping[str, bytes]
    sha: str = ""

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1()
            for name in sorted(self.files):
                digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
            self.sha = digest.hexdigest()


@dataclass
class StandInHub:
    repos: dict[str, Repo]
    log: list[Served] = field(default_factory=list)
    drop_once: dict[str, int] = field(default_factory=dict)
    """Repo path (``repo/filename``) -> bytes sent before the first full GET of it is cut."""
    missing: set[str] = field(default_factory=set)
    """Repo paths listed in the repo but answered 404 by resolve (a Hub that fails midway)."""
    endpoint: str = ""
    cdn: str = ""
    _blobs: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for repo_id, repo in self.repos.items():
            for name, data in repo.files.items():
                self._blobs[hashlib.sha256(data).hexdigest()] = (f"{repo_id}/{name}", data)

    def requests(self, server: str, method: str = "GET") -> list[Served]:
        return [r for r in self.log if r.server == server and r.method == method]


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: StandInHub
    role: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet: the log is `hub.log`
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.log.append(Served(self.role, self.command, path, self.headers.get("Range")))
        if self.role == "cdn":
            self._cdn(path, body)
            return
        if path.startswith("/api/models/"):
            self._info(path[len("/api/models/") :])
            return
        if "/resolve/" in path:
            repo_id, _, rest = path.lstrip("/").partition("/resolve/")
            revision, _, filename = rest.partition("/")
            self._resolve(repo_id, revision, filename, body)
            return
        self._error(404, "EntryNotFound")

    def _info(self, rest: str) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound")
            return
        if revision not in ("", REVISION, repo.sha):
            self._error(404, "RevisionNotFound")
            return
        info = {
            "_id": repo.sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": name} for name in sorted(repo.files)],
        }
        self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def _resolve(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound")
            return
        if revision not in (REVISION, repo.sha):
            self._error(404, "RevisionNotFound")
            return
        commit = {"X-Repo-Commit": repo.sha}
        data = repo.files.get(filename)
        if data is None or f"{repo_id}/{filename}" in self.hub.missing:
            self._error(404, "EntryNotFound", commit)
            return
        if filename.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            headers = {
                **commit,
                "Location": f"{self.hub.cdn}/lfs/{sha256}",
                "ETag": f'"{_git_blob_sha(sha256.encode())}"',
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
            }
            self._send(302, b"", headers)
            return
        self._file(f"{repo_id}/{filename}", data, {**commit, "ETag": f'"{_git_blob_sha(data)}"'}, body)

    def _cdn(self, path: str, body: bool) -> None:
        blob = self.hub._blobs.get(path.rpartition("/")[2]) if path.startswith("/lfs/") else None
        if blob is None:
            self._error(404, "EntryNotFound")
            return
        name, data = blob
        self._file(name, data, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, body)

    def _file(self, name: str, data: bytes, headers: dict[str, str], body: bool) -> None:
        requested = self.headers.get("Range")
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if requested:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206, data[start:], headers, body)
            return
        cut = self.hub.drop_once.pop(name, None) if body else None
        if cut is None:
            self._send(200, data, headers, body)
            return
        self._headers(200, len(data), headers)
        self.wfile.write(data[:cut])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _error(self, status: int, code: str, headers: Mapping[str, str] = {}) -> None:
        message = json.dumps({"error": f"{code} (stand-in hub)"}).encode()
        self._send(status, message, {**headers, "X-Error-Code": code, "Content-Type": "application/json"})

    def _send(self, status: int, data: bytes, headers: Mapping[str, str], body: bool = True) -> None:
        self._headers(status, len(data), headers)
        if body and self.command != "HEAD":
            self.wfile.write(data)

    def _headers(self, status: int, length: int, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()


def _serve(hub: StandInHub, role: str) -> ThreadingHTTPServer:
    handler = type(f"{role.title()}Handler", (_Handler,), {"hub": hub, "role": role})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"stand-in-{role}", daemon=True).start()
    return server


@contextmanager
def stand_in_hub(repos: dict[str, Repo]) -> Iterator[StandInHub]:
    """The stand-in, serving until the block ends: ``HF_ENDPOINT=hub.endpoint`` points huggingface_hub at it."""
    hub = StandInHub(repos)
    servers = [_serve(hub, "hub"), _serve(hub, "cdn")]
    hub.endpoint, hub.cdn = (f"http://127.0.0.1:{server.server_address[1]}" for server in servers)
    try:
        yield hub
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (an endpoint out of reach)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
