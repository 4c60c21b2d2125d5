"""A fake Hugging Face Hub behind huggingface_hub's HTTP client, and tests of the fake itself.

Only the transport is replaced (``huggingface_hub.set_client_factory`` with an httpx ``MockTransport``): the real
client code of ``HfApi.create_repo`` / ``upload_folder`` and ``snapshot_download`` runs and talks to
:class:`FakeHub`, which answers the endpoints those calls use the way the Hub does (repo creation, YAML validation,
preupload, the LFS batch API with a "basic" upload, the NDJSON commit, model info and file resolution). Commits are
applied to an in-memory repo, so what was pushed can be downloaded again into a real HF cache.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants, metadata_load
from huggingface_hub.utils import _http as hf_http

httpx = getattr(hf_http, "httpx2", None) or getattr(hf_http, "httpx")  # the client library of this version

ENDPOINT = "https://huggingface.co"
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.tiktoken", "*.json.gz")  # what a Hub repo's .gitattributes sends to LFS
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files go to LFS whatever their name


def git_blob_sha1(data: bytes) -> str:
    """Git's object id of a blob: the ETag the Hub gives a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)  # paths stored as LFS pointers
    commits: list[dict] = field(default_factory=list)  # {"oid", "summary", "operations"}

    @property
    def head(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40


class FakeHub:
    """In-memory Hub: ``repos[repo_id]``, uploaded LFS objects by sha256, and every request seen."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.created: dict[str, dict] = {}  # repo id -> the create_repo payload

    # ------------------------------------------------------------------------------------------------ routing
    def __call__(self, request):
        path = request.url.path
        self.requests.append((request.method, path))
        routes = [
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", r"/api/(?:models|datasets)/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/lfs-storage/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("POST", r"/api/(?:models|datasets)/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", self._model_info),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<folder>.+))?", self._tree),
            ("HEAD", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
            ("GET", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if method == request.method and match:
                return handler(request, **{k: v for k, v in match.groupdict().items() if v is not None})
        return self._error(404, f"no route for {request.method} {path}")

    @staticmethod
    def _error(status: int, message: str, code: str | None = None):
        headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
        return httpx.Response(status, json={"error": message}, headers=headers)

    def _repo(self, repo: str):
        return self.repos.get(repo)

    # ------------------------------------------------------------------------------------------------ upload
    def _create_repo(self, request):
        body = json.loads(request.content)
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if request.headers.get("authorization") is None:
            return self._error(401, "Invalid username or password.")
        if repo_id in self.repos:  # the Hub's 409 names the existing repo's URL, which create_repo(exist_ok) returns
            message = "You already created this model repo"
            return httpx.Response(409, json={"error": message, "url": f"{ENDPOINT}/{repo_id}"},
                                  headers={"X-Error-Message": message})  # fmt: skip
        self.repos[repo_id] = Repo()
        self.created[repo_id] = body
        return httpx.Response(200, json={"url": f"{ENDPOINT}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, request):
        content = json.loads(request.content)["content"]
        metadata = metadata_load_from_text(content)
        errors = []
        if metadata is None:
            errors.append({"message": "README.md has no YAML metadata"})
        elif not isinstance(metadata.get("library_name", ""), str):
            errors.append({"message": "library_name must be a string"})
        if errors:
            return httpx.Response(400, json={"errors": errors})
        return httpx.Response(200, json={"warnings": []})

    def _preupload(self, request, repo, rev):
        if self._repo(repo) is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        files = json.loads(request.content)["files"]
        modes = [
            {"path": f["path"], "shouldIgnore": False, "oid": None,
             "uploadMode": "lfs" if f["size"] >= LFS_MIN_SIZE or any(fnmatch(f["path"], p) for p in LFS_PATTERNS)
             else "regular"}
            for f in files
        ]  # fmt: skip
        return httpx.Response(200, json={"files": modes, "commitOid": self.repos[repo].head})

    def _lfs_batch(self, request, repo):
        body = json.loads(request.content)
        assert body["operation"] == "upload" and "basic" in body["transfers"], body
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:  # already stored objects need no upload, as on the Hub
                entry["actions"] = {"upload": {"href": f"{ENDPOINT}/lfs-storage/{obj['oid']}"}}
            objects.append(entry)
        return httpx.Response(200, json={"transfer": "basic", "objects": objects})

    def _lfs_put(self, request, oid):
        data = request.read()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "sha256 of the uploaded object does not match its oid")
        self.lfs_objects[oid] = data
        return httpx.Response(200)

    def _commit(self, request, repo, rev):
        state = self._repo(repo)
        if state is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        lines = [json.loads(line) for line in request.content.decode().splitlines() if line.strip()]
        header, operations = lines[0], lines[1:]
        assert header["key"] == "header", header
        for op in operations:  # validate everything before changing the repo: a commit is all or nothing
            if op["key"] == "lfsFile" and op["value"]["oid"] not in self.lfs_objects:
                return self._error(422, f"LFS object {op['value']['oid']} of {op['value']['path']} was never uploaded")
        for op in operations:
            value = op["value"]
            if op["key"] == "file":
                state.files[value["path"]] = base64.b64decode(value["content"])
                state.lfs.discard(value["path"])
            elif op["key"] == "lfsFile":
                state.files[value["path"]] = self.lfs_objects[value["oid"]]
                state.lfs.add(value["path"])
            elif op["key"] == "deletedFile":
                state.files.pop(value["path"], None)
            else:
                return self._error(400, f"unsupported commit operation {op['key']}")
        oid = hashlib.sha1(json.dumps([state.head, lines], sort_keys=True).encode()).hexdigest()
        state.commits.append({"oid": oid, "summary": header["value"]["summary"], "operations": operations})
        return httpx.Response(200, json={"commitUrl": f"{ENDPOINT}/{repo}/commit/{oid}", "commitOid": oid,
                                         "success": True})  # fmt: skip

    # ------------------------------------------------------------------------------------------------ download
    def _model_info(self, request, repo, rev="main"):
        state = self._repo(repo)
        if state is None or not state.commits:
            return self._error(404, "Repository not found", "RepoNotFound")
        siblings = [{"rfilename": name} for name in sorted(state.files)]
        return httpx.Response(200, json={"id": repo, "modelId": repo, "sha": state.head, "siblings": siblings,
                                         "private": False, "tags": [], "downloads": 0, "likes": 0})  # fmt: skip

    def _tree(self, request, repo, rev, folder=""):
        state = self._repo(repo)
        if state is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        assert request.url.params.get("recursive") in ("true", "True"), "the fake lists trees recursively only"
        prefix = f"{folder}/" if folder else ""
        entries, folders = [], set()
        for name, data in sorted(state.files.items()):
            if not name.startswith(prefix):
                continue
            parts = name.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
            entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
            if name in state.lfs:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "path": f, "size": 0, "oid": "0" * 40} for f in sorted(folders)
                    if f.startswith(prefix)]  # fmt: skip
        return httpx.Response(200, json=entries)

    def _resolve(self, request, repo, rev, file):
        state = self._repo(repo)
        if state is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        if file not in state.files:
            return self._error(404, "Entry not found", "EntryNotFound")
        data = state.files[file]
        headers = {"X-Repo-Commit": state.head, "Content-Length": str(len(data))}
        if file in state.lfs:
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update({"X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data)), "ETag": f'"{sha256}"'})
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)


def metadata_load_from_text(readme: str) -> dict | None:
    """huggingface_hub's own YAML front-matter parser, on a string."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "README.md"
        path.write_text(readme, encoding="utf-8")
        return metadata_load(path)


@contextmanager
def serving(hub: FakeHub, monkeypatch: pytest.MonkeyPatch):
    """Route every huggingface_hub request of this process to ``hub`` (online mode, plain LFS instead of Xet)."""
    default = hf_http.default_client_factory()  # keep the default client's hooks (offline check, request ids)
    hooks, default_timeout = default.event_hooks, default.timeout
    default.close()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # Xet uploads go through hf_xet's own HTTP stack
    monkeypatch.setattr(constants, "ENDPOINT", ENDPOINT)
    huggingface_hub.set_client_factory(
        lambda: httpx.Client(transport=httpx.MockTransport(hub), event_hooks=hooks, follow_redirects=True,
                             timeout=default_timeout)  # fmt: skip
    )
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(hf_http.default_client_factory)


# ---------------------------------------------------------------------------------------------- the fake's own tests
def test_fake_hub_round_trips_a_folder_and_refuses_a_commit_with_a_missing_lfs_object(tmp_path, monkeypatch):
    """Files pushed through the real client come back byte for byte, LFS or not; a broken commit changes nothing."""
    from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download

    folder = tmp_path / "up"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(bytes(range(256)) * 3)
    (folder / "sub" / "notes.txt").write_text("hello")
    with serving(FakeHub(), monkeypatch) as hub:
        api = HfApi(token="hf_fake")
        api.create_repo("org/repo")
        info = api.upload_folder(repo_id="org/repo", folder_path=folder)
        assert hub.repos["org/repo"].lfs == {"weights.safetensors"}
        assert info.oid == hub.repos["org/repo"].head
        local = snapshot_download("org/repo", cache_dir=tmp_path / "cache")
        for name in ("weights.safetensors", "sub/notes.txt"):
            assert (Path(local) / name).read_bytes() == (folder / name).read_bytes()

        hub.lfs_objects.clear()  # the next commit references an object the fake no longer has
        before = dict(hub.repos["org/repo"].files)
        with pytest.raises(Exception, match="never uploaded"):
            # upload_mode is fixed by hand so that no LFS upload happens before the commit
            op = CommitOperationAdd("other.safetensors", b"\x01" * 10)
            api.preupload_lfs_files("org/repo", [op])
            hub.lfs_objects.clear()
            api.create_commit("org/repo", [op], commit_message="broken")
        assert hub.repos["org/repo"].files == before
