"""`llamafoundry deploy cancel|resume NAME` and `deploy create --wait`: the weight downloads that run in the
background (`platform.downloads`), stopped, resumed and followed from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamafoundry.commands.common import console, print_error
from llamafoundry.commands.runtime_view import is_stale
from llamafoundry.commands.store_options import add_store_options, home_of, open_store

if TYPE_CHECKING:
    from llamafoundry.platform.downloads import DownloadJob
    from llamafoundry.platform.store import Store

WAIT_POLL_S = 0.5


def register(sub: argparse._SubParsersAction) -> None:
    cancel = sub.add_parser("cancel", help="stop the download of a deployment's weights (`deploy resume` continues)")
    cancel.add_argument("name")
    cancel.set_defaults(handler=_cancel, audit_action="deployment.download.cancel")
    resume = sub.add_parser("resume", help="download again a cancelled or failed deployment's weights, from the "
                            "bytes already downloaded")  # fmt: skip
    resume.add_argument("name")
    resume.add_argument("--wait", action="store_true", help="follow the download with a progress bar until the "
                        "deployment is ready (downloading it here when no server does; a download under way is "
                        "followed)")  # fmt: skip
    resume.set_defaults(handler=_resume, audit_action="deployment.download.resume")
    for parser in (cancel, resume):
        add_store_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON instead of a sentence")


def _cancel(args: argparse.Namespace) -> int:
    from llamafoundry.platform.downloads import cancel

    return _change(args, cancel, "Cancelled the download of {name}; its bytes are kept: `llamafoundry deploy resume "
                   "{name}` continues it.")  # fmt: skip


def _resume(args: argparse.Namespace) -> int:
    from llamafoundry.platform.downloads import DOWNLOADING, get_job, resume

    name = args.name.lower()
    if args.wait:  # a download that is under way (or waits for a server) is followed, and made here if no one does
        with open_store(args) as store:
            job = get_job(store, name)
            if job is not None and job.state == DOWNLOADING:
                return wait_until_ready(store, name, home_of(args))
    code = _change(args, resume, "The download of {name} resumes from the bytes it has.")
    if code != 0 or not args.wait:
        return code
    with open_store(args) as store:
        return wait_until_ready(store, name, home_of(args))


def _change(args: argparse.Namespace, change: Any, sentence: str) -> int:
    from llamafoundry.platform.deployments import DeploymentError
    from llamafoundry.platform.downloads import status

    with open_store(args) as store:
        try:
            job = change(store, args.name.lower())
        except DeploymentError as exc:
            print_error(exc.message)
            return 1
    if args.json:
        print(json.dumps({"name": job.deployment, "status": status(job)}, indent=2))
    else:
        console.print(sentence.format(name=job.deployment), soft_wrap=True, highlight=False)
    return 0


def print_queued(name: str, store: Store) -> None:
    """What `deploy create` says of a deployment whose weights are downloading: how to follow it."""
    console.print(f"Deployment {name} is [bold]downloading[/bold] its weights in the background. Follow it with "
                  f"`llamafoundry deploy show {name}`; `llamafoundry deploy cancel {name}` stops it (`deploy resume` "
                  "continues).", soft_wrap=True, highlight=False)  # fmt: skip
    if not live_servers(store):
        console.print("No server is running on this data directory: the next `llamafoundry serve` downloads it "
                      f"(or `llamafoundry deploy resume {name} --wait` downloads it now).", soft_wrap=True,
                      highlight=False)  # fmt: skip


def live_servers(store: Store) -> set[str]:
    now = time.time()
    return {r.server for r in store.runtime_reports() if not is_stale(now - r.updated_at)}


def wait_until_ready(store: Store, name: str, home: Path) -> int:
    """Follow a deployment's download with a progress bar (downloading it here when no server does: whoever holds
    the job's lease downloads it), then until a running server reports it ready. Ctrl-C stops waiting; a download
    made here stops too, its bytes kept for whoever resumes it."""
    from llamafoundry.platform.downloads import FAILED, DownloadWorker, get_job, process_id

    # the worker's log line of a failure would repeat the sentence printed below
    logging.getLogger("llamafoundry.platform.downloads").setLevel(logging.CRITICAL)
    worker = DownloadWorker(store, home / "models", process_id("deploy --wait"))
    try:
        try:
            job = _follow_download(store, name, worker)
        finally:
            worker.stop()
        if job is not None:
            ended = "failed" if job.state == FAILED else f"was {job.state}"
            print_error(f"The download of {name} {ended}: {job.error or ''}".rstrip(": "))
            return 1
        return _wait_served(store, name) if get_job(store, name) is None else 1
    except KeyboardInterrupt:
        console.print(f"Stopped waiting; `llamafoundry deploy show {name}` shows where it is.", highlight=False)
        return 130


def _follow_download(store: Store, name: str, worker: Any) -> DownloadJob | None:
    """Until the job is gone (downloaded): None; or the job that failed or was cancelled."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from llamafoundry.platform.downloads import DOWNLOADING, get_job

    with Progress(TextColumn(f"downloading {name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console) as bar:  # fmt: skip
        task = bar.add_task("download", total=None)
        while True:
            worker.tick()
            job = get_job(store, name)
            if job is None:
                return None
            if job.state != DOWNLOADING:
                return job
            running = worker.running.get(name)
            done, total = (running.done, running.total) if running else (job.downloaded_bytes, job.total_bytes)
            bar.update(task, completed=done, total=total)
            time.sleep(WAIT_POLL_S)


def _wait_served(store: Store, name: str) -> int:
    """After the download: until a live server reports the deployment ready (or failed); none running: say so."""
    console.print(f"The weights of {name} are downloaded.")
    while True:
        if not live_servers(store):
            console.print(f"Start `llamafoundry serve` to serve {name}.", highlight=False)
            return 0
        states = {r.status.get("state"): r.status for r in store.runtime(name)}
        if "ready" in states:
            console.print(f"Deployment {name} is [bold]ready[/bold].")
            return 0
        for state in ("failed", "not served"):
            if state in states:
                print_error(f"Deployment {name} is {state}: {states[state].get('error')}")
                return 1
        time.sleep(WAIT_POLL_S)


def download_lines(job: DownloadJob) -> list[str]:
    """`deploy show`'s lines on a download: its state, progress, rate and ETA, who downloads it, or why it stopped."""
    from llamafoundry.platform.downloads import status

    body = status(job)
    progress = body["progress"]
    done, total = progress["downloaded_bytes"], progress["total_bytes"]
    amount = f"{done / 1e6:,.1f} MB" + (f" of {total / 1e6:,.1f} MB ({progress['percent']}%)" if total else "")
    line = f"Download: [bold]{job.state}[/bold], {amount}"
    if progress.get("rate_bytes_per_s"):
        line += f", {progress['rate_bytes_per_s'] / 1e6:,.1f} MB/s"
        if progress.get("eta_s") is not None:
            line += f", about {progress['eta_s']} s left"
    lines = [line]
    if body.get("downloading_on"):
        lines.append(f"  downloading on {body['downloading_on']}")
    if body.get("queued"):
        lines.append(f"  {body['queued']}")
    if body.get("error"):
        lines.append(f"  reason: {body['error']}")
    if job.state != "downloading":
        lines.append(f"  `llamafoundry deploy resume {job.deployment}` continues it from the bytes downloaded.")
    return lines
