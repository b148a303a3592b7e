"""Parked jobs: requests the API accepted while no queue could take them, kept in S3 until a node adopts them.

When the node sleeps (``node`` mode: Redis lives on it) or Redis is away (``elasticache`` mode), the router parks
the job in the reply bucket instead of refusing it; the agent adopts every parked job into its queue when it
starts, whenever Redis came back empty, and before it decides that the node is idle. Keys in the bucket:

``inbox/<id>.json``
    the parked job: ``{"v": 1, "job": <job>, "parked_at": <epoch s>, "slot": <slot key or null>,
    "reason": "..."}``, written with ``If-None-Match: *`` (a job id is parked at most once).
``inbox-slots/<owner digest>/<n>``
    the per-user cap. A user has ``n`` in ``0 … burst-1``; parking takes the first free slot with a conditional
    write, so two routers racing for the last slot cannot both win (S3 answers the loser 412, or 409 while the
    other write is in flight: https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html).
    The slot names the job it holds; it is deleted after the parked job is adopted or expired.

Exactly once: adoption runs the job through the same ``enqueue`` script as the router, which refuses a job whose
``owner:<id>`` exists (queued, running, or answered within ``RESULT_TTL_S``), and deletes the parked object only
after the enqueue succeeded or was refused as a duplicate. A parked job that no node adopts within
``PARK_TTL_S`` gets an ``expired`` reply (queue_health's sweep), so no accepted job waits forever.

The class is synchronous (boto3); the agent runs it on its AWS threads.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from jobqueue import contract
from jobqueue.contract import Job, JobError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

INBOX_PREFIX: Final = "inbox/"
SLOT_PREFIX: Final = "inbox-slots/"
ENVELOPE_VERSION: Final = 1
PARK_TTL_S: Final = 900
"""A parked job not adopted within this long is answered ``expired``: a cold boot takes up to 90 s, so 900 s
means the node failed to start (capacity, quota, a held node) and the user must hear it."""
PARK_MAX: Final = 100
"""Parked jobs at most, all users together (above it: 503)."""
SLOT_STALE_S: Final = 60
"""A slot whose parked job is gone for this long was left by a crash between two deletes; it is freed."""
_TAKEN: Final = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
_MISSING: Final = ("NoSuchKey", "404", "NotFound")


def inbox_key(job_id: str) -> str:
    return f"{INBOX_PREFIX}{job_id}.json"


def job_id_of(key: str) -> str | None:
    """The job id of an ``inbox/<id>.json`` key, or None for anything else under the prefix."""
    name = key.removeprefix(INBOX_PREFIX).removesuffix(".json")
    return name if key.startswith(INBOX_PREFIX) and contract.UUID4_RE.match(name) else None


def owner_digest(owner: str) -> str:
    """Slot keys name the owner by a digest: a ``sub`` is not guaranteed to be a safe key segment."""
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]


def slot_key(owner: str, n: int) -> str:
    return f"{SLOT_PREFIX}{owner_digest(owner)}/{n}"


class InboxError(Exception):
    """Parking refused. ``code``: ``USER_FULL`` (429), ``FULL`` (503) or ``STORE`` (S3 unavailable, 503)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Parked:
    job: Job
    parked_at: float
    slot: str | None
    reason: str

    def encode(self) -> bytes:
        body = {"v": ENVELOPE_VERSION, "job": self.job, "parked_at": self.parked_at, "slot": self.slot,
                "reason": self.reason}  # fmt: skip
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> Parked:
        """Parse a parked object; raises JobError naming what is wrong."""
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise JobError("parked job", f"not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("v") != ENVELOPE_VERSION:
            raise JobError("parked job", f"not a version {ENVELOPE_VERSION} envelope")
        parked_at = data.get("parked_at")
        if not isinstance(parked_at, int | float):
            raise JobError("parked job", "parked_at must be a number")
        slot = data.get("slot")
        return cls(contract.validate(data.get("job")), float(parked_at), slot if isinstance(slot, str) else None,
                   str(data.get("reason", "")))  # fmt: skip

    def age_s(self, now: float) -> float:
        return now - self.parked_at


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class Inbox:
    def __init__(self, s3: S3Client, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    # ------------------------------------------------------------ the router's side

    def park(self, job: Job, *, per_user: int, total: int = PARK_MAX, reason: str, now: float | None = None) -> Parked:
        """Park a job under one of its owner's ``per_user`` slots; raises InboxError when it cannot."""
        try:
            if self.count(total) >= total:
                raise InboxError("FULL", f"{total} requests are already waiting for the node")
            slot = self._take_slot(job["owner"], job["id"], per_user)
            if slot is None:
                raise InboxError("USER_FULL", f"you have {per_user} requests waiting for the node already")
            parked = Parked(job, time.time() if now is None else now, slot, reason)
            try:
                self._put_new(inbox_key(job["id"]), parked.encode())
            except BaseException:
                self._delete(slot)
                raise
        except (ClientError, BotoCoreError) as exc:
            raise InboxError("STORE", f"the request store is unavailable ({exc})") from None
        return parked

    def put_back(self, job: Job, reason: str, now: float | None = None) -> bool:
        """Park a job the node withdrew from its queue as it stopped (no slot: it was accepted already).
        False when the job was parked already."""
        parked = Parked(job, time.time() if now is None else now, None, reason)
        try:
            self._put_new(inbox_key(job["id"]), parked.encode())
        except ClientError as exc:
            if _code(exc) in _TAKEN:
                return False
            raise
        return True

    def get(self, job_id: str) -> Parked | None:
        """The parked job, or None when it is not (or no longer) parked; raises JobError for a damaged one."""
        raw = self._read(inbox_key(job_id))
        return None if raw is None else Parked.decode(raw)

    def count(self, limit: int) -> int:
        """How many jobs are parked, counting up to ``limit`` (one LIST call)."""
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=INBOX_PREFIX, MaxKeys=max(limit, 1))
        return int(listed.get("KeyCount", 0))

    def reply(self, job_id: str) -> dict[str, Any] | None:
        """The final reply of a job, if one is stored."""
        raw = self._read(contract.reply_object_key(job_id))
        return None if raw is None else dict(json.loads(raw))

    # ------------------------------------------------------------ the node's side

    def job_ids(self) -> Iterator[str]:
        """Every parked job id, oldest key order as S3 lists them."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=INBOX_PREFIX)
        for page in pages:
            for item in page.get("Contents", []):
                found = job_id_of(item["Key"])
                if found is not None:
                    yield found

    def has_reply(self, job_id: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=contract.reply_object_key(job_id))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def remove(self, job_id: str, slot: str | None) -> None:
        """Delete the parked object, then its slot (a crash between the two leaves a slot freed later)."""
        self._delete(inbox_key(job_id))
        if slot:
            self._delete(slot)

    def write_reply(self, reply: dict[str, Any]) -> None:
        """Store a final reply the way the agent does: the first one stands."""
        try:
            self._put_new(contract.reply_object_key(reply["id"]), json.dumps(reply, ensure_ascii=False).encode())
        except ClientError as exc:
            if _code(exc) not in _TAKEN:
                raise

    def expire(self, ttl_s: float = PARK_TTL_S, now: float | None = None) -> list[str]:
        """Answer ``expired`` to every job parked longer than ``ttl_s``, and free slots left by crashes.
        Returns the expired job ids."""
        now = time.time() if now is None else now
        expired = []
        for job_id in list(self.job_ids()):
            try:
                parked = self.get(job_id)
            except JobError as exc:
                self.write_reply(contract.build_reply(job_id, "failed", error=f"invalid parked job: {exc}",
                                                      finished_at=now))  # fmt: skip
                self.remove(job_id, None)
                continue
            if parked is None or parked.age_s(now) < ttl_s:
                continue
            reason = (
                f"no node took the request within {ttl_s:.0f} s of it being parked ({parked.reason}); "
                "the node did not start: see the node's state and the alarms"
            )
            job = parked.job
            reply = contract.build_reply(job_id, "expired", owner=job["owner"], error=reason,
                                         created_at=job["created_at"], finished_at=now)  # fmt: skip
            self.write_reply(reply)
            self.remove(job_id, parked.slot)
            expired.append(job_id)
        self._free_stale_slots(now)
        return expired

    # ------------------------------------------------------------ S3

    def _take_slot(self, owner: str, job_id: str, per_user: int) -> str | None:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{SLOT_PREFIX}{owner_digest(owner)}/")
        used = {item["Key"] for item in listed.get("Contents", [])}
        candidates = [slot_key(owner, n) for n in range(per_user)]
        for free_first in (True, False):
            for key in candidates:
                if (key in used) == free_first:
                    continue
                if key in used and not self._stale(key, time.time()):
                    continue
                try:
                    self._put_new(key, job_id.encode())
                except ClientError as exc:
                    if _code(exc) in _TAKEN:
                        continue
                    raise
                return key
        return None

    def _stale(self, slot: str, now: float) -> bool:
        """A slot whose job is no longer parked, older than SLOT_STALE_S: delete it and say so."""
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=slot)
        except ClientError as exc:
            return _code(exc) in _MISSING
        holder = obj["Body"].read().decode("utf-8", "replace")
        if now - obj["LastModified"].timestamp() < SLOT_STALE_S or self._read(inbox_key(holder)) is not None:
            return False
        self._delete(slot)
        return True

    def _free_stale_slots(self, now: float) -> None:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=SLOT_PREFIX)
        for page in pages:
            for item in page.get("Contents", []):
                if now - item["LastModified"].timestamp() >= SLOT_STALE_S:
                    self._stale(item["Key"], now)

    def _put_new(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*")

    def _read(self, key: str) -> bytes | None:
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise

    def _delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)
