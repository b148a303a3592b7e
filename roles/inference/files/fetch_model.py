#!/usr/bin/env python3
"""Fetch model weights from S3 onto the node: one object (a GGUF file) or every object under a prefix (a vLLM
model directory). Only what is missing or differs (size, ETag) is downloaded, into a temporary file renamed
into place, so an interrupted fetch never leaves a half-written weight file behind. Prints one JSON line:
{"changed": bool, "downloaded": n, "bytes": n, "files": n}.

    fetch_model.py s3://bucket/models/model.gguf /opt/tinyllama/models/tinyllama.gguf
    fetch_model.py s3://bucket/models/qwen2.5-7b-awq/ /opt/tinyllama/models/tinyllama
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3

MANIFEST = ".tl-fetch.json"


def parse(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:] or uri.endswith("s3://"):
        raise SystemExit(f"fetch_model: not an s3://bucket/key URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise SystemExit(f"fetch_model: not an s3://bucket/key URI: {uri!r}")
    return bucket, key


def plan(s3: Any, bucket: str, key: str, dest: Path) -> tuple[Path, list[tuple[str, Path, int, str]]]:
    """(manifest path, [(key, local path, size, etag)]) for the object or prefix."""
    if not key.endswith("/"):
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchKey"):
                raise
        else:
            manifest = dest.with_name(dest.name + MANIFEST)
            return manifest, [(key, dest, head["ContentLength"], head["ETag"])]
        key += "/"
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Contents", []):
            relative = item["Key"][len(key) :]
            if not relative or relative.endswith("/"):
                continue
            if ".." in Path(relative).parts:
                raise SystemExit(f"fetch_model: refusing key outside the prefix: {item['Key']!r}")
            objects.append((item["Key"], dest / relative, item["Size"], item["ETag"]))
    return dest / MANIFEST, objects


def fetch(uri: str, dest: Path, s3: Any | None = None) -> dict[str, Any]:
    bucket, key = parse(uri)
    s3 = s3 or boto3.client("s3")
    manifest_path, objects = plan(s3, bucket, key, dest)
    if not objects:
        raise SystemExit(f"fetch_model: nothing at {uri}")
    try:
        known = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        known = {}
    downloaded = size = 0
    for object_key, path, length, etag in objects:
        stamp = f"{length}:{etag}"
        if path.exists() and path.stat().st_size == length and known.get(object_key) == stamp:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        tmp = Path(name)
        try:
            s3.download_file(bucket, object_key, name)
            tmp.chmod(0o644)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        known[object_key] = stamp
        downloaded += 1
        size += length
    if downloaded:
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(known, indent=1, sort_keys=True))
    return {"changed": downloaded > 0, "downloaded": downloaded, "bytes": size, "files": len(objects)}


def main(argv: list[str]) -> int:
    try:
        source, dest = argv
    except ValueError:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(fetch(source, Path(dest))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
