"""A fake of the Hugging Face Hub's HTTP API, enough for ``--push-to-hub`` (no network in tests).

It answers what ``huggingface_hub.HfApi.create_repo`` and ``create_commit`` send: repository
creation, the pre-upload check (every file is uploaded inline, "regular", never LFS or Xet) and the
NDJSON commit, whose files it keeps in memory (``FakeHub.files``). Point huggingface_hub at it with
``HF_ENDPOINT=hub.url``; ``token`` makes it refuse requests without that bearer token.
"""

from __future__ import annotations

import base64
import hashlib
from types import TracebackType
from typing import Any, Self

import orjson
import yaml
from aiohttp import web

__all__ = ["FakeHub"]


class FakeHub:
    """``async with FakeHub() as hub``: a Hub on loopback; ``hub.files[repo][path]`` is what was pushed."""

    def __init__(self, *, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.token = token
        self.host = host
        self.repos: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.commits: list[dict[str, Any]] = []
        self.cards: list[dict[str, Any]] = []  # the front matter of every card validated
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._auth])
        app.router.add_post("/api/repos/create", self._create)
        app.router.add_post("/api/validate-yaml", self._validate_yaml)
        app.router.add_post("/api/{kind}/{owner}/{name}/preupload/{revision}", self._preupload)
        app.router.add_post("/api/{kind}/{owner}/{name}/commit/{revision}", self._commit)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = getattr(site, "_server", None)
        self.port = server.sockets[0].getsockname()[1] if server is not None else 0

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        self.requests.append((request.method, request.path, header))
        if self.token is not None and header != f"Bearer {self.token}":
            return web.json_response({"error": "Invalid credentials in Authorization header"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        owner = body.get("organization") or "user"
        repo = f"{owner}/{body['name']}"
        if body.get("type") != "dataset":
            return web.json_response({"error": "only datasets here"}, status=400)
        if repo in self.repos:
            return web.json_response({"error": "You already created this dataset repo"}, status=409)
        # huggingface_hub 1.x sends "private"; 2.x sends "visibility"
        self.repos[repo] = {"private": bool(body.get("private")) or body.get("visibility") == "private"}
        self.files.setdefault(repo, {})
        return web.json_response({"url": f"{self.url}/datasets/{repo}", "name": repo})

    async def _validate_yaml(self, request: web.Request) -> web.Response:
        """A dataset card's front matter must be a YAML mapping (the Hub refuses the commit otherwise)."""
        content = str((await request.json()).get("content", ""))
        if not content.startswith("---\n"):
            return web.json_response({"errors": [], "warnings": [{"message": "empty or missing metadata"}]})
        front = content[4:].split("\n---\n", 1)[0]
        try:
            meta = yaml.safe_load(front)
        except yaml.YAMLError as exc:
            return web.json_response({"errors": [{"message": f"invalid YAML: {exc}"}]}, status=400)
        if not isinstance(meta, dict):
            return web.json_response({"errors": [{"message": "metadata must be a mapping"}]}, status=400)
        self.cards.append(meta)
        return web.json_response({"errors": [], "warnings": []})

    async def _preupload(self, request: web.Request) -> web.Response:
        body = await request.json()
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]]
        return web.json_response({"files": files, "commitOid": "0" * 40})

    async def _commit(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        if repo not in self.repos:
            return web.json_response({"error": "Repository not found"}, status=404)
        header: dict[str, Any] = {}
        added: dict[str, bytes] = {}
        for line in (await request.read()).splitlines():
            if not line.strip():
                continue
            item = orjson.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                value = item["value"]
                added[value["path"]] = base64.b64decode(value["content"])
            else:
                return web.json_response({"error": f"unsupported operation {item['key']}"}, status=400)
        self.files[repo].update(added)
        oid = hashlib.sha1(orjson.dumps(sorted((k, v.hex()) for k, v in added.items()))).hexdigest()
        self.commits.append({"repo": repo, "summary": header.get("summary"), "files": sorted(added)})
        return web.json_response(
            {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/datasets/{repo}/commit/{oid}"}
        )
