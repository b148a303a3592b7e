#!/usr/bin/env python3
"""Weights from the Hugging Face Hub, kept in the project's bucket: the Hub is read once, S3 ever after.

    hub_model.py --repo Qwen/Qwen2.5-0.5B-Instruct-GGUF --revision main --file qwen2.5-0.5b-instruct-q4_k_m.gguf \
        --sha256 74a4…  --copy s3://bucket/models/ --dest /opt/tinyllama/models/tinyllama.gguf
    hub_model.py --repo Qwen/Qwen2.5-7B-Instruct-AWQ --revision main --copy s3://bucket/models/ \
        --dest /opt/tinyllama/models/tinyllama

1. The copy (``<copy><repo>/<revision>/``) is complete when its ``tl-hub.json`` exists — written last, after every
   file — naming the commit the revision resolved to and each file's sha256. Then the weights come from S3 only
   (``fetch_model.py``: only what is missing or changed), and each file is checked against that record.
2. Otherwise the Hub is read with ``huggingface_hub`` (which honours ``HF_ENDPOINT`` and ``HF_TOKEN``; a gated
   model needs the token), the file's sha256 is checked against ``--sha256`` before anything is kept, the files go
   to the copy, the record last, and the weights then come from the copy as in 1.

A wrong sha256, a gated model without a token, or an unknown repo, revision or file is a one-line error and
exit 1, and leaves the copy and the destination as they were. Prints one JSON line:
{"changed", "source": "hub"|"s3", "commit", "files"}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_model

RECORD = "tl-hub.json"


class HubError(Exception):
    """The weights cannot be had as asked; the message says why and what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_prefix(copy: str, repo: str, revision: str) -> tuple[str, str]:
    bucket, key = fetch_model.parse(copy.rstrip("/") + "/x")
    return bucket, f"{key[:-1]}{repo}/{revision}/"


def read_record(s3: Any, bucket: str, prefix: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=prefix + RECORD)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return dict(json.loads(body))


def from_hub(repo: str, revision: str, filename: str, workdir: Path) -> tuple[str, dict[str, Path]]:
    """(commit, {relative path: local file}) downloaded from the Hub into ``workdir``."""
    import huggingface_hub  # noqa: PLC0415 (only this path needs it)
    from huggingface_hub import errors  # noqa: PLC0415

    try:
        info = huggingface_hub.model_info(repo, revision=revision, files_metadata=False)
        commit = str(info.sha)
        if filename:
            path = huggingface_hub.hf_hub_download(repo, filename, revision=commit, local_dir=workdir)
            return commit, {filename: Path(path)}
        folder = Path(huggingface_hub.snapshot_download(repo, revision=commit, local_dir=workdir))
        names = [s.rfilename for s in info.siblings or []]
        return commit, {name: folder / name for name in names if (folder / name).is_file()}
    except errors.GatedRepoError:
        raise HubError(
            f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN to a token that may read it"
        ) from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"no repository {repo} on the Hub (or it is private and HF_TOKEN may not read it)") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{repo} has no revision {revision!r}") from None
    except errors.EntryNotFoundError:
        raise HubError(f"{repo}@{revision} has no file {filename!r}") from None
    except errors.HfHubHTTPError as exc:
        raise HubError(f"the Hub refused {repo}@{revision}: {exc}") from None
    except Exception as exc:  # the network's errors (httpx's), whatever their class in this client's version
        raise HubError(f"cannot read {repo}@{revision} from {huggingface_hub.constants.ENDPOINT}: {exc}") from None


def publish(
    s3: Any, bucket: str, prefix: str, commit: str, files: dict[str, Path], *, sha256: str, filename: str
) -> dict[str, Any]:
    sums = {name: sha256_of(path) for name, path in sorted(files.items())}
    if not sums:
        raise HubError("the Hub gave no files")
    if sha256 and sums.get(filename) != sha256:
        raise HubError(f"{filename} has sha256 {sums.get(filename)}, not the pinned {sha256}: nothing was kept")
    for name, path in files.items():
        s3.upload_file(str(path), bucket, prefix + name)
    record = {"commit": commit, "sha256": sums}
    s3.put_object(Bucket=bucket, Key=prefix + RECORD, Body=json.dumps(record, indent=1).encode())
    return record


def run(args: argparse.Namespace, s3: Any | None = None) -> dict[str, Any]:
    s3 = s3 or boto3.client("s3")
    bucket, prefix = copy_prefix(args.copy, args.repo, args.revision)
    record, source = read_record(s3, bucket, prefix), "s3"
    if record is None:
        source = "hub"
        with tempfile.TemporaryDirectory(prefix="tl-hub-") as workdir:
            commit, files = from_hub(args.repo, args.revision, args.file, Path(workdir))
            record = publish(s3, bucket, prefix, commit, files, sha256=args.sha256, filename=args.file)
    if args.sha256 and record["sha256"].get(args.file) != args.sha256:
        raise HubError(f"the copy at s3://{bucket}/{prefix} records sha256 {record['sha256'].get(args.file)} for "
                       f"{args.file}, not the pinned {args.sha256}; delete the copy to fetch it again")  # fmt: skip
    dest = Path(args.dest)
    wanted = f"s3://{bucket}/{prefix}{args.file}" if args.file else f"s3://{bucket}/{prefix}"
    # a whole repository brings the copy's record along, and keeps it: fetch_model then finds it unchanged
    fetched = fetch_model.fetch(wanted, dest, s3)
    targets = {args.file: dest} if args.file else {n: dest / n for n in record["sha256"]}
    for name, path in targets.items():
        if sha256_of(path) != record["sha256"][name]:
            raise HubError(f"{path} does not match the sha256 the copy records for {name}")
    return {"changed": fetched["changed"], "source": source, "commit": record["commit"], "files": len(targets)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", default="main")
    parser.add_argument("--file", default="", help="one file of the repository (a GGUF); none: the whole snapshot")
    parser.add_argument("--sha256", default="", help="the file's pinned sha256")
    parser.add_argument("--copy", required=True, help="s3://bucket/prefix/ where the copy is kept")
    parser.add_argument("--dest", required=True)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(run(args)))
    except HubError as exc:
        print(f"hub_model: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
