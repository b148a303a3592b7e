"""Resizing the node: stop → wait until stopped → modify the instance type → start.

An HTTP API gives an integration 30 s, and a g4dn.xlarge can take longer than that to stop. So by default
(``TL_RESIZE_MODE=async``) the request is checked, the node is tagged ``tl-resizing``, and the function invokes
itself asynchronously to do the work (its timeout must cover a stop and a start: 10 minutes); the answer is
202. ``inline`` does the work within the request (local runs, where the local AWS stops instantly).
While ``tl-resizing`` is on the node, the router does not start it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.common import metrics
from lambdas.common.auth import JwksCache, Verifier, authenticate
from lambdas.common.http import HttpError, Request, disabled, is_http_event, respond
from lambdas.common.logs import log
from lambdas.common.node import RESIZING_TAG, find_node
from lambdas.common.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

Dispatch = Callable[[dict[str, Any]], None]


class ShapeControl:
    def __init__(self, settings: Settings, ec2: EC2Client, verifier: Verifier, dispatch: Dispatch | None) -> None:
        self.s = settings
        self.ec2 = ec2
        self.verifier = verifier
        self.dispatch = dispatch

    @classmethod
    def from_env(cls, ec2: EC2Client, dispatch: Dispatch | None) -> ShapeControl:
        s = Settings.from_env()
        s.require("jwks_url", "jwt_issuer", "jwt_audience")
        return cls(s, ec2, Verifier(JwksCache(s.jwks_url), s.jwt_issuer, s.jwt_audience, s.jwt_token_use), dispatch)

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        if is_http_event(event):
            req = Request.from_event(event)
            started = time.perf_counter()
            try:
                response = self.request(req)
            except HttpError as exc:
                response = exc.response()
            log("info", "request", requestId=req.request_id, route=req.route, status=response["statusCode"],
                latencyMs=round((time.perf_counter() - started) * 1000, 2))  # fmt: skip
            return response
        if event.get("action") == "resize":
            return self.resize(str(event["instance"]), str(event["target"]))
        log("warning", "event ignored", keys=sorted(event))
        return {"ignored": True}

    def request(self, req: Request) -> dict[str, Any]:
        if self.s.disable_router:
            return disabled()
        claims = authenticate(self.verifier, req.headers.get("authorization"))
        if self.s.admin_group not in claims.groups:
            raise HttpError(403, f"only members of the {self.s.admin_group} group may resize the node")
        target = req.query.get("target", "")
        if target not in self.s.resize_targets:
            allowed = ", ".join(self.s.resize_targets)
            raise HttpError(400, f"target: must be one of {allowed}, got {target[:32]!r}", field="target")
        try:
            node = find_node(self.ec2, self.s.node_tag)
            if node is None:
                raise HttpError(404, f"no instance tagged {'='.join(self.s.node_tag)}")
            if node.held:
                raise HttpError(409, "the node is held by the budget killer (tl-hold tag); remove the tag first")
            if node.resizing:
                raise HttpError(409, "a resize of the node is already under way")
            if node.instance_type == target:
                return respond(200, {"status": "unchanged", "instance": node.instance_id, "type": target})
            self.ec2.create_tags(Resources=[node.instance_id], Tags=[{"Key": RESIZING_TAG, "Value": target}])
        except (ClientError, BotoCoreError) as exc:
            log("error", "resize not started", error=str(exc))
            raise HttpError(503, "cannot reach EC2; try again", status="unavailable") from None
        log("info", "resize requested", instance=node.instance_id, source=node.instance_type, target=target,
            user=claims.sub)  # fmt: skip
        job = {"action": "resize", "instance": node.instance_id, "target": target}
        body = {"instance": node.instance_id, "from": node.instance_type, "to": target}
        if self.s.resize_mode == "inline" or self.dispatch is None:
            return respond(200, {**self.resize(node.instance_id, target), **body})
        try:
            self.dispatch(job)
        except (ClientError, BotoCoreError) as exc:
            self.ec2.delete_tags(Resources=[node.instance_id], Tags=[{"Key": RESIZING_TAG}])
            log("error", "resize not dispatched", error=str(exc))
            raise HttpError(503, "the resize could not be started; try again", status="unavailable") from None
        return respond(202, {"status": "resizing", **body})

    def resize(self, instance_id: str, target: str) -> dict[str, Any]:
        """Stop, wait, retype, start; the ``tl-resizing`` tag comes off whatever happens."""
        started = time.monotonic()
        try:
            self.ec2.stop_instances(InstanceIds=[instance_id])
            self.ec2.get_waiter("instance_stopped").wait(
                InstanceIds=[instance_id], WaiterConfig={"Delay": 5, "MaxAttempts": 96}
            )
            self.ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": target})
            self.ec2.start_instances(InstanceIds=[instance_id])
        finally:
            self.ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": RESIZING_TAG}])
        seconds = round(time.monotonic() - started, 1)
        metrics.emit({"Resizes": 1}, instance=instance_id, target=target)
        log("info", "node resized and started", instance=instance_id, target=target, seconds=seconds)
        return {"status": "resized", "instance": instance_id, "type": target, "seconds": seconds}
