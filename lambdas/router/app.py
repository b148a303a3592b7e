"""The router's decisions. ``handler.py`` builds one ``Router`` per Lambda container (``lambdas.common.app``).

Events it answers:
* API Gateway HTTP API (payload 2.0): ``POST /infer``, ``GET /result/{id}``, ``POST /stop``, ``GET /status``,
  ``GET /ping``;
* EventBridge "EC2 Instance State-change Notification" for the node: when the node has stopped while a job
  was queued for it (the agent decided to stop just as the job came in), start it again.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import redis
from botocore.exceptions import BotoCoreError, ClientError

from jobqueue import contract
from jobqueue.contract import JobError
from jobqueue.inbox import Inbox, InboxError
from jobqueue.queue import EnqueueError, JobQueue
from lambdas import routes
from lambdas.common import costs, metrics
from lambdas.common.app import Answer, Event, HttpApp
from lambdas.common.auth import Claims, JwksCache, Verifier
from lambdas.common.clients import aws
from lambdas.common.http import HttpError, Request, respond
from lambdas.common.logs import log
from lambdas.common.node import Node, find_node
from lambdas.common.redis_client import connect_queue
from lambdas.common.settings import Settings
from lambdas.router.schema import parse_infer

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client

AWS_ERRORS: Final = (ClientError, BotoCoreError)


def _node_word(node: Node | None, beat: dict[str, Any] | None) -> str:
    if node is None:
        return "no-node"
    if node.held:
        return "held"
    if node.resizing:
        return "resizing"
    if node.state in ("stopped", "stopping"):
        return "asleep" if node.state == "stopped" else "stopping"
    if node.state == "pending" or beat is None:
        return "starting"
    return str(beat.get("state") or "starting")


class Router(HttpApp):
    function = "router"

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        ec2: EC2Client,
        s3: S3Client,
        verifier: Verifier,
        *,
        inbox: Inbox,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(settings, verifier, clock)
        self.queue = queue
        self.ec2 = ec2
        self.s3 = s3
        self.inbox = inbox

    @classmethod
    def from_env(cls) -> Router:
        s = Settings.from_env()
        s.require("jwks_url", "jwt_issuer", "jwt_audience", "reply_bucket")
        s3 = aws("s3")
        return cls(
            s,
            JobQueue(connect_queue(s)),
            aws("ec2"),
            s3,
            Verifier(JwksCache(s.jwks_url), s.jwt_issuer, s.jwt_audience, s.jwt_token_use),
            inbox=Inbox(s3, s.reply_bucket),
        )

    # ------------------------------------------------------------------ dispatch

    def event(self, event: Event) -> Answer:
        if event.get("source") == "aws.ec2" and event.get("detail-type") == "EC2 Instance State-change Notification":
            return self.node_changed(event.get("detail") or {})
        return super().event(event)

    def serve_open(self, route: routes.Route, req: Request) -> Answer:
        """``GET /ping``: liveness, without a token; on AWS only from the VPC (the canary), as HTTP APIs have no
        resource policy."""
        if self.s.ping_cidrs:
            try:
                source = ipaddress.ip_address(req.source_ip)
            except ValueError:
                source = None
            if source is None or not any(source in network for network in self.s.ping_cidrs):
                raise HttpError(403, "/ping answers only inside the service's network")
        return respond(200, {"status": "ok"})

    def serve(self, route: routes.Route, req: Request, claims: Claims) -> Answer:
        if route.path == "/infer":
            return self.infer(req, claims)
        if route.path == "/result/{id}":
            job_id = req.path_params.get("id") or req.path.rsplit("/", 1)[-1]
            return self.result(job_id, claims)
        if route.path == "/status":
            return self.status()
        return self.stop(claims)

    # ------------------------------------------------------------------ POST /infer

    def infer(self, req: Request, claims: Claims) -> dict[str, Any]:
        if req.body_error:
            raise HttpError(400, req.body_error, field="body")
        body = parse_infer(req.raw_body)
        beat: dict[str, Any] | None = None
        reachable = True
        try:
            wait_ms = self.queue.take_token(claims.sub, self.s.throttle_burst, self.s.throttle_per_minute)
            beat = self.queue.heartbeat()
        except redis.RedisError as exc:
            # The node sleeps (node mode) or the queue is away: the request is parked, not refused.
            reachable, wait_ms = False, 0
            log("info", "queue not reachable; the request will be parked", error=f"{type(exc).__name__}: {exc}")
        if wait_ms:
            retry_after = max(1, math.ceil(wait_ms / 1000))
            metrics.emit({"RateLimitBreaches": 1})
            raise HttpError(
                429,
                f"too many requests: {self.s.throttle_burst} at once, {self.s.throttle_per_minute} a minute",
                headers={"retry-after": str(retry_after)},
                retryAfter=retry_after,
            )
        job = contract.new_job(body.prompt, claims.sub, **body.job_fields())
        headers = {"x-request-id": job["id"]}
        if contract.is_serving(beat) and self._enqueue(job):
            return respond(202, {"status": "queued", "id": job["id"]}, headers)
        node = self._wake_node()
        starting = respond(202, {"status": "starting", "eta": self.s.start_eta_s, "id": job["id"]}, headers)
        if reachable and beat is None and self._enqueue(job):
            # Redis is up but no agent speaks yet (the node boots, or the queue is ElastiCache and the node
            # sleeps): the job waits in the queue. Should the node stop now, the state-change event starts it.
            if node.state != "stopped":
                self._try_wake()
            return starting
        why = "queue not reachable" if beat is None else f"node {beat.get('state')}"
        self._park(job, why)
        return starting

    def _enqueue(self, job: contract.Job) -> bool:
        """Queue the job in Redis: True when it is queued, False when Redis went away (park it instead)."""
        try:
            self.queue.enqueue(job)
        except EnqueueError as exc:
            log("error", "job refused by the queue", code=exc.code, error=str(exc), id=job["id"])
            metrics.emit({"RedisEnqueueFail": 1})
            raise HttpError(
                503, f"the queue refused the job ({exc.code}): try again later", status="unavailable",
                headers={"retry-after": "30"},
            ) from None  # fmt: skip
        except redis.RedisError as exc:
            log("warning", "queue went away while enqueueing; the request will be parked", error=str(exc))
            metrics.emit({"RedisEnqueueFail": 1})
            return False
        return True

    def _try_wake(self) -> None:
        try:
            self.queue.request_wake()
        except redis.RedisError as exc:
            log("warning", "wake request not written", error=str(exc))

    def _park(self, job: contract.Job, reason: str) -> None:
        """Keep the job in S3 until the node adopts it (at most the burst per user, TL_PARK_MAX in all)."""
        retry = {"retry-after": str(max(self.s.start_eta_s, 1))}
        try:
            self.inbox.park(job, per_user=self.s.throttle_burst, total=self.s.park_max, reason=reason)
        except InboxError as exc:
            log("warning", "request not parked", code=exc.code, error=str(exc), id=job["id"])
            if exc.code == "USER_FULL":
                metrics.emit({"RateLimitBreaches": 1})
                raise HttpError(429, f"{exc}: wait for the node to start", headers=retry,
                                retryAfter=max(self.s.start_eta_s, 1)) from None  # fmt: skip
            metrics.emit({"ParkFail": 1})
            status = "full" if exc.code == "FULL" else "unavailable"
            raise HttpError(503, f"the request was not accepted: {exc}; try again later", status=status,
                            headers=retry) from None  # fmt: skip
        metrics.emit({"JobsParked": 1})
        log("info", "request parked until the node adopts it", id=job["id"], reason=reason)

    def _wake_node(self) -> Node:
        """No agent is serving: find the node and start it if it is stopped (exactly once)."""
        try:
            node = find_node(self.ec2, self.s.node_tag)
        except AWS_ERRORS as exc:
            log("error", "cannot look up the node", error=str(exc))
            raise HttpError(503, "cannot reach EC2 to start the node; try again", status="unavailable") from None
        tag = "=".join(self.s.node_tag)
        if node is None:
            raise HttpError(503, f"no instance tagged {tag}: deploy the node first", status="no-node")
        if node.held:
            raise HttpError(
                503,
                f"the node is held ({node.tags['tl-hold']}): starts are refused until the tl-hold tag is removed",
                status="held",
            )
        if node.state == "stopped" and not node.resizing:
            self._start(node, "a request came in")
        return node

    def _start(self, node: Node, reason: str) -> None:
        try:
            self.ec2.start_instances(InstanceIds=[node.instance_id])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "IncorrectInstanceState":  # started by someone else meanwhile: fine
                return
            log("error", "node did not start", instance=node.instance_id, code=code, error=str(exc))
            raise HttpError(
                503, f"the node could not be started ({code}); nothing was queued, try again later",
                status="unavailable", headers={"retry-after": "60"},
            ) from None  # fmt: skip
        except BotoCoreError as exc:
            log("error", "node did not start", instance=node.instance_id, error=str(exc))
            raise HttpError(503, "cannot reach EC2 to start the node; try again", status="unavailable") from None
        metrics.emit({"EC2Starts": 1}, instance=node.instance_id)
        log("info", "node started", instance=node.instance_id, reason=reason)

    # ------------------------------------------------------------------ GET /result/{id}

    def result(self, job_id: str, claims: Claims) -> dict[str, Any]:
        not_found = HttpError(404, f"no job {job_id[:64]} of yours")
        if not contract.UUID4_RE.match(job_id):
            raise not_found
        try:
            progress = self.queue.progress(job_id)
            beat = None if progress.result or progress.started else self.queue.heartbeat()
        except redis.RedisError as exc:
            log("info", "queue not reachable; looking for the job in S3", error=str(exc))
            return self._parked_result(job_id, claims, not_found, queue_away=True)
        if progress.owner is None:
            return self._parked_result(job_id, claims, not_found, queue_away=False)
        if progress.owner != claims.sub:
            raise not_found
        body: dict[str, Any] = {"id": job_id}
        if progress.result is not None:
            body["status"] = progress.result["status"]
            if progress.result.get("error"):
                body["error"] = progress.result["error"]
            body.update(self._reply(job_id))
        elif progress.started:
            body.update(status="running", text=progress.text)
        elif progress.queued:
            body["status"] = "queued" if contract.is_serving(beat) else "starting"
        else:
            body["status"] = "expired"  # never claimed within its TTL; the agent writes the reply when it runs
        return respond(200, body)

    def _parked_result(self, job_id: str, claims: Claims, not_found: HttpError, *, queue_away: bool) -> dict[str, Any]:
        """A job Redis does not know: parked in S3 (``starting``), answered while parked, or nobody's."""
        try:
            parked = self.inbox.get(job_id)
            reply = None if parked is not None else self.inbox.reply(job_id)
        except (*AWS_ERRORS, JobError, ValueError) as exc:
            log("error", "parked job not readable", id=job_id, error=str(exc))
            raise HttpError(503, "the request store is unavailable; try again", status="unavailable") from None
        if parked is not None and parked.job["owner"] == claims.sub:
            return respond(200, {"id": job_id, "status": "starting", "eta": self.s.start_eta_s})
        if reply is not None and reply.get("owner") == claims.sub:
            body = {"id": job_id, "status": reply["status"]}
            if reply.get("error"):
                body["error"] = reply["error"]
            return respond(200, {**body, **self._reply(job_id)})
        if queue_away and parked is None and reply is None:
            raise HttpError(503, "the job queue is unavailable; try again", status="unavailable")
        raise not_found

    def _reply(self, job_id: str) -> dict[str, Any]:
        key = contract.reply_object_key(job_id)
        try:
            obj = self.s3.get_object(Bucket=self.s.reply_bucket, Key=key)
            reply = json.loads(obj["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return {}
            log("error", "reply not readable", key=key, error=str(exc))
            raise HttpError(503, "the reply store is unavailable; try again", status="unavailable") from None
        except (BotoCoreError, ValueError) as exc:
            log("error", "reply not readable", key=key, error=str(exc))
            raise HttpError(503, "the reply store is unavailable; try again", status="unavailable") from None
        url = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.s.reply_bucket, "Key": key}, ExpiresIn=self.s.presign_ttl_s
        )
        return {"reply": reply, "url": url}

    # ------------------------------------------------------------------ GET /status

    def status(self) -> dict[str, Any]:
        """What a person looking at the service wants to know: the node's state as one word (``asleep``,
        ``starting``, ``ready``, ``busy``, ``draining``, ``stopping``, ``held``, ``resizing``, ``no-node``), the
        queue, and this month's spend against the budget. Each part says ``null`` when its source is away rather
        than failing the whole answer; only EC2 away is a 503."""
        try:
            node = find_node(self.ec2, self.s.node_tag)
        except AWS_ERRORS as exc:
            log("error", "cannot look up the node", error=str(exc))
            raise HttpError(503, "cannot reach EC2; try again", status="unavailable") from None
        beat: dict[str, Any] | None = None
        depth: int | None = None
        if node is not None and node.state == "running":
            try:
                beat, depth = self.queue.heartbeat(), self.queue.depth()
            except redis.RedisError as exc:  # booting (node mode), or the queue away
                log("info", "queue not reachable for the status", error=str(exc))
        try:
            parked: int | None = self.inbox.count(self.s.park_max)
        except AWS_ERRORS as exc:
            log("warning", "parked requests not counted", error=str(exc))
            parked = None
        body: dict[str, Any] = {
            "node": _node_word(node, beat),
            "instance": None if node is None else node.instance_id,
            "instance_type": None if node is None else node.instance_type,
            "shape": (beat or {}).get("shape"),
            "model": (beat or {}).get("model"),
            "in_flight": (beat or {}).get("in_flight"),
            "idle_stop_in_s": (beat or {}).get("idle_stop_in_s"),
            "queue_depth": depth,
            "parked": parked,
            "budget_eur": self.s.budget_eur,
            **self._spend(),
        }
        if body["node"] == "starting":
            body["eta"] = self.s.start_eta_s
        return respond(200, body)

    def _spend(self) -> dict[str, Any]:
        """This month's spend as cost_publisher last copied it (``lambdas.common.costs.SPEND_KEY``)."""
        try:
            raw = self.s3.get_object(Bucket=self.s.reply_bucket, Key=costs.SPEND_KEY)["Body"].read()
            copy = json.loads(raw)
            return {"spend_eur": float(copy["eur"]), "spend_at": str(copy["at"])}
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                log("warning", "spend not read", error=str(exc))
        except (BotoCoreError, ValueError, KeyError, TypeError) as exc:
            log("warning", "spend not read", error=str(exc))
        return {"spend_eur": None, "spend_at": None}

    # ------------------------------------------------------------------ POST /stop

    def stop(self, claims: Claims) -> dict[str, Any]:
        try:
            node = find_node(self.ec2, self.s.node_tag)
            if node is None:
                raise HttpError(404, f"no instance tagged {'='.join(self.s.node_tag)}")
            if node.state not in ("pending", "running"):
                return respond(200, {"status": node.state, "instance": node.instance_id})
            self.ec2.stop_instances(InstanceIds=[node.instance_id])
        except AWS_ERRORS as exc:
            log("error", "node not stopped", error=str(exc))
            raise HttpError(503, "cannot reach EC2 to stop the node; try again", status="unavailable") from None
        try:
            self.queue.cancel_wake()  # a stop asked for is not undone by a job that was waiting
        except redis.RedisError as exc:
            log("warning", "wake request not cancelled", error=str(exc))
        metrics.emit({"NodeStops": 1}, instance=node.instance_id, user=claims.sub)
        log("info", "node stop requested", instance=node.instance_id, user=claims.sub)
        return respond(202, {"status": "stopping", "instance": node.instance_id})

    # ------------------------------------------------------------------ EC2 state change

    def node_changed(self, detail: dict[str, Any]) -> dict[str, Any]:
        """The node stopped: start it again when requests wait for it (parked in S3, or queued under a wake).

        Errors propagate: EventBridge invokes asynchronously, and Lambda retries a failed event twice."""
        if detail.get("state") != "stopped":
            return {"action": "none"}
        node = find_node(self.ec2, self.s.node_tag)
        if node is None or node.instance_id != detail.get("instance-id") or node.state != "stopped":
            return {"action": "none"}
        if node.held or node.resizing:
            return {"action": "none", "reason": "held" if node.held else "resizing"}
        parked = self.inbox.count(1)
        try:
            woken = self.queue.take_wake()
        except redis.RedisError:
            woken = False  # node mode: the queue sleeps with the node; what waits for it is parked in S3
        if not parked and not woken:
            return {"action": "none"}
        reason = "parked requests wait" if parked else "jobs were queued while it stopped"
        self._start(node, reason)
        return {"action": "started", "instance": node.instance_id, "reason": reason}
