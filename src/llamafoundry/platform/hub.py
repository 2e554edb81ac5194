"""Downloading GGUF files from a Hugging Face hub: resumable, checked, and split files whole.

- **Resumable.** Bytes go to `<file>.part`, with `<file>.part.json` naming what they are (URL, the hub's checksum,
  size). An interrupted download (a dropped connection, Ctrl-C, a cancelled job) continues from the bytes it has
  with an HTTP `Range` request; a server that ignores the range, or a file that changed on the hub, starts over.
- **Checked.** The finished file must match the catalog's pinned SHA-256, else the hub's own checksum of the LFS
  object (`X-Linked-Etag`, which is the file's SHA-256); a mismatch deletes the file.
- **Split files.** Large quantizations (70B, 405B, Llama 4) are published as `<name>-00001-of-0000N.gguf` parts,
  often in a folder: a source naming a folder (`dir/`) or a first part is expanded to all its parts through the
  hub's tree API, each part is downloaded and checked, and the first part is what llama.cpp loads (it finds the
  others beside it).

The hub is `HF_ENDPOINT` (default https://huggingface.co); `HF_TOKEN` is sent when set, as huggingface_hub does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0
DEFAULT_QUANT = "Q4_K_M"
# The way around a download that cannot be made, as the end of a sentence.
LOCAL_FILE = "give a file you downloaded yourself (deploy create --weights PATH.gguf, serve --model PATH.gguf)"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")

# progress(done_bytes, total_bytes or None), over all the files of one download
Progress = Callable[[int, int | None], None]


class HubError(ValueError):
    """The download failed; the message says why and what to do."""


class DownloadCancelled(HubError):
    """The download was cancelled; what arrived is kept in the `.part` file for the next attempt."""


@dataclass(frozen=True)
class HubFile:
    """One file of a repository: its path in the repository, and what is known of its size and SHA-256."""

    path: str
    size: int | None = None
    sha256: str | None = None


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_HF_ENDPOINT).rstrip("/")


def resolve_url(repo: str, path: str) -> str:
    return f"{endpoint()}/{repo}/resolve/main/{path}"


def auth_headers() -> dict[str, str]:
    token = os.environ.get("HF_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def files_of(repo: str, path: str, pinned_sha256: str | None = None) -> list[HubFile]:
    """The files to download for `path`: itself, or every part of a split file (a folder `dir/`, or a first part
    `x-00001-of-0000N.gguf`), in order."""
    split = _SPLIT.match(path.rsplit("/", 1)[-1])
    if not path.endswith("/") and split is None:
        return [HubFile(path, sha256=pinned_sha256)]
    folder = path if path.endswith("/") else path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    listed = [f for f in list_folder(repo, folder) if f.path.endswith(".gguf")]
    if split is not None:
        stem = split.group("stem")
        listed = [f for f in listed if f.path.rsplit("/", 1)[-1].startswith(f"{stem}-")]
    return _complete_split(repo, path, sorted(listed, key=lambda f: f.path))


def _complete_split(repo: str, path: str, listed: list[HubFile]) -> list[HubFile]:
    """`listed` when it is one file, or every part 1..N of one split file; else a HubError naming what is off."""
    if len(listed) == 1 and _SPLIT.match(listed[0].path.rsplit("/", 1)[-1]) is None:
        return listed
    counts = {m.group("count") for f in listed if (m := _SPLIT.match(f.path.rsplit("/", 1)[-1]))}
    if len(counts) != 1 or len(listed) != int(next(iter(counts))):
        names = ", ".join(f.path for f in listed) or "no .gguf files"
        raise HubError(f"{repo}/{path} is not one complete split GGUF on the hub (found: {names}).")
    return listed


def pick_gguf(repo: str, choice: str | None = None) -> str:
    """The path to download for `owner/repo[:choice]`: `choice` itself when it names a .gguf file or a folder
    (`dir/`); else the GGUF file, split file or folder at the repository's top level whose name holds the
    quantization `choice` (default DEFAULT_QUANT, what the catalog downloads); else the repository's only GGUF."""
    if choice and (choice.endswith(".gguf") or choice.endswith("/")):
        return choice
    files, folders = [], []
    for entry in _tree(repo, ""):
        path = str(entry.get("path", ""))
        split = _SPLIT.match(path)
        if entry.get("type") == "directory":
            folders.append(path + "/")
        elif path.endswith(".gguf") and (split is None or int(split.group("index")) == 1):
            files.append(path)  # a split file by its first part: `files_of` adds the others
    tag = (choice or DEFAULT_QUANT).lower()
    matching = [p for p in files + folders if tag in p.lower()]
    if len(matching) == 1:
        return matching[0]
    if not matching and not choice and len(files) == 1:
        return files[0]
    found = ", ".join(matching or files) or "no .gguf files"
    raise HubError(
        f"{repo} has {'several' if matching else 'no'} GGUF files for {tag.upper()!r} (found: {found}). Name one: "
        f"{repo}:FILE.gguf, or {repo}:QUANT (Q4_K_M, Q8_0, ...)."
    )


def _tree(repo: str, folder: str) -> list[dict[str, Any]]:
    """The entries of `folder` in `repo` (the hub's tree API): files and directories."""
    url = f"{endpoint()}/api/models/{repo}/tree/main/{folder.rstrip('/')}".rstrip("/")
    try:
        response = httpx.get(url, headers=auth_headers(), follow_redirects=True, timeout=TIMEOUT_S)
    except httpx.TransportError as exc:
        raise _offline(repo, folder, exc) from None
    _check_status(response, repo, folder or "its file list")
    entries = response.json()
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def list_folder(repo: str, folder: str) -> list[HubFile]:
    """The files in `folder` of `repo` (the hub's tree API), with sizes and LFS checksums."""
    found = []
    for entry in _tree(repo, folder):
        if entry.get("type") != "file":
            continue
        lfs = entry.get("lfs") or {}
        sha = str(lfs.get("oid") or lfs.get("sha256") or "")
        found.append(HubFile(str(entry["path"]), entry.get("size"), sha if _SHA256.match(sha) else None))
    return found


def download(
    repo: str,
    path: str,
    target_dir: Path,
    pinned_sha256: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Download `path` of `repo` (every part, for a split file) into `target_dir/<repo>/`; returns the file to load
    (the first part). Files already there are not downloaded again."""
    files = files_of(repo, path, pinned_sha256)
    total = sum(f.size for f in files if f.size is not None) if all(f.size for f in files) else None
    done_before = 0
    paths, fetched = [], False
    for hub_file in files:
        target = target_dir / repo / hub_file.path
        if not target.is_file():
            _download_one(repo, hub_file, target, _offset(progress, done_before, total), cancel)
            fetched = True
        done_before += target.stat().st_size
        paths.append(target)
    if fetched:  # the whole, at its end (a file already here reports nothing: no bar for it)
        _report(progress, done_before, total or done_before)
    return paths[0]


def _offset(progress: Progress | None, before: int, total: int | None) -> Progress:
    """One file's progress as progress of the whole download: the files before it count too. Without the sizes
    from a listing (one file named directly), the total is the file's own, from the response."""
    return lambda done, size: _report(progress, before + done, before + size if total is None and size else total)


def _report(progress: Progress | None, done: int, total: int | None) -> None:
    if progress is not None:
        progress(done, total)


def _download_one(
    repo: str, hub_file: HubFile, target: Path, progress: Progress, cancel: threading.Event | None
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part, meta_path = target.with_name(target.name + ".part"), target.with_name(target.name + ".part.json")
    url = resolve_url(repo, hub_file.path)
    meta = _meta(meta_path)
    have = part.stat().st_size if part.is_file() and meta.get("url") == url else 0
    try:
        result = _fetch(url, repo, hub_file, part, meta_path, have, meta.get("sha256"), progress, cancel)
        if result is None:  # the file changed on the hub since the part was written: start over
            result = _fetch(url, repo, hub_file, part, meta_path, 0, None, progress, cancel)
    except httpx.TransportError as exc:
        raise _offline(repo, hub_file.path, exc) from None
    assert result is not None
    digest, expected = result
    _finish(part, meta_path, target, digest, expected, hub_file.path)


def _fetch(
    url: str,
    repo: str,
    hub_file: HubFile,
    part: Path,
    meta_path: Path,
    have: int,
    part_sha256: str | None,
    progress: Progress,
    cancel: threading.Event | None,
) -> tuple[str, str | None] | None:
    """One GET of the file (from byte `have` when the part holds that many): the whole file's SHA-256 and the one
    expected; None when the part turned out to be of another version of the file."""
    headers = {**auth_headers(), **({"Range": f"bytes={have}-"} if have else {})}
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=TIMEOUT_S) as response:
        if response.status_code == 416 and have:  # asked past the end: the part may be whole already
            return _sha256_of(part), hub_file.sha256 or part_sha256
        _check_status(response, repo, hub_file.path, partial_ok=bool(have))
        expected = hub_file.sha256 or hub_sha256(response)
        if have and part_sha256 not in (None, expected):
            return None
        if response.status_code != 206:
            have = 0  # the server sent the whole file: it replaces the part
        meta_path.write_text(json.dumps({"url": url, "sha256": expected, "size": _total_size(response, have)}))
        return _save(response, part, have, progress, cancel), expected


def _finish(part: Path, meta_path: Path, target: Path, actual: str, expected: str | None, name: str) -> None:
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise HubError(
            f"The download of {name} is corrupt: its SHA-256 is {actual}, expected {expected}. It was deleted; "
            "run the command again."
        )
    part.rename(target)
    meta_path.unlink(missing_ok=True)


def _save(
    response: httpx.Response, part: Path, have: int, progress: Progress, cancel: threading.Event | None
) -> str:
    """Append the response to `part` (after its first `have` bytes, which are hashed first); the whole file's
    SHA-256."""
    digest = hashlib.sha256()
    if have:
        with part.open("rb") as existing:
            for chunk in iter(lambda: existing.read(CHUNK_BYTES), b""):
                digest.update(chunk)
    total, done = _total_size(response, have), have
    with part.open("ab" if have else "wb") as out:
        for chunk in response.iter_bytes():  # as they arrive: a dropped connection keeps every byte received
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(f"The download was cancelled at {done} bytes; it resumes from there.")
            out.write(chunk)
            out.flush()  # on disk (the OS's cache) as it arrives: progress readers and a resume see every byte
            digest.update(chunk)
            done += len(chunk)
            progress(done, total)
    return digest.hexdigest()


def _total_size(response: httpx.Response, have: int) -> int | None:
    length = response.headers.get("content-length")
    if not length:
        return None
    return int(length) + (have if response.status_code == 206 else 0)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _meta(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def hub_sha256(response: httpx.Response) -> str | None:
    """The SHA-256 the hub states for an LFS file, from the last response (or a redirect) of the chain."""
    for candidate in (response, *reversed(response.history)):
        etag = candidate.headers.get("x-linked-etag", "").strip().strip('"').removeprefix("W/").strip('"')
        if _SHA256.match(etag):
            return etag
    return None


def _check_status(response: httpx.Response, repo: str, path: str, partial_ok: bool = False) -> None:
    if response.status_code in (401, 403):
        raise HubError(
            f"Hugging Face refused {repo} ({response.status_code}): the repository may be gated. Accept its "
            f"license on the hub and set HF_TOKEN, or {LOCAL_FILE}."
        )
    if response.status_code == 200 or (partial_ok and response.status_code == 206):
        return
    raise HubError(
        f"Could not download {path} from {repo}: HTTP {response.status_code}. Check the name, or {LOCAL_FILE}."
    )


def _offline(repo: str, path: str, exc: Exception) -> HubError:
    url = resolve_url(repo, path)
    return HubError(
        f"Could not download {path} from {url} ({type(exc).__name__}: {exc}). This machine may be offline: on a "
        f"machine that is online run `huggingface-cli download {repo} {path} --local-dir .` (or `curl -L -o "
        f"{path.rsplit('/', 1)[-1]} {url}`), copy the file here and {LOCAL_FILE}."
    )
