"""How every function is written: one app object per Lambda container, and one wrapper around HTTP routes.

**One app per container.** Each function's ``handler.py`` is ``entry = Entry(build)`` and a ``handler`` that calls
it: the app (its settings, AWS clients, Redis connection, key cache) is built on the first invocation and reused by
every later one in the same execution environment, as AWS advises ("Take advantage of execution environment reuse
… initialize SDK clients and database connections outside of the function handler", Lambda developer guide,
"Best practices for working with AWS Lambda functions",
https://docs.aws.amazon.com/lambda/latest/dg/best-practices.html; the apps keep settings and clients, never a
user's data, as the same page asks). Building on the first call rather than at import keeps
a broken setting an error of that call (logged with its reason), and lets the local edge build each function's
clients on that function's own role (``clients.ROLE_CREDENTIALS``). ``entry.reset()`` forgets the app (tests).

**One HTTP wrapper.** ``HttpApp.handle`` answers an API Gateway HTTP API event (payload 2.0) the same way for every
function: the route looked up in ``lambdas.routes`` (404 otherwise), open routes (``auth=False``) answered at once,
every other route 503 while ``TL_DISABLE_LAM_ROUTER`` is set, the Cognito id token checked, an ``HttpError`` turned
into its answer, and one ``request`` log line with the status, the latency and the user. Any other event (a
schedule, an EC2 state change, the function's own asynchronous invocation) goes to ``event``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from lambdas import routes
from lambdas.common.http import HttpError, Request, disabled, is_http_event
from lambdas.common.logs import log
from lambdas.common.settings import Settings

if TYPE_CHECKING:  # the token check is imported where a token is checked: queue_health's zip has no JWT library
    from lambdas.common.auth import Claims, Verifier

Event = dict[str, Any]
Answer = dict[str, Any]


class App(Protocol):
    def handle(self, event: Event, context: object = None) -> Answer: ...


A = TypeVar("A", bound=App)


class Entry(Generic[A]):
    """A function's app, built by ``build(context)`` on the first invocation of the container and kept."""

    def __init__(self, build: Callable[[Any], A]) -> None:
        self._build = build
        self._app: A | None = None

    def __call__(self, event: Event, context: object) -> Answer:
        if self._app is None:
            self._app = self._build(context)
        return self._app.handle(event, context)

    def reset(self) -> None:
        """Forget the app, so that the next call reads the environment again (tests, the local edge)."""
        self._app = None


class HttpApp:
    """The part every function behind the HTTP API shares; a subclass names its ``function`` (as in
    ``lambdas.routes``) and answers its routes in ``serve`` (token checked) and ``serve_open`` (no token)."""

    function: ClassVar[str]

    def __init__(self, settings: Settings, verifier: Verifier | None, clock: Callable[[], float]) -> None:
        self.s = settings
        self.verifier = verifier
        self.clock = clock

    def handle(self, event: Event, context: object = None) -> Answer:
        if is_http_event(event):
            return self.http(Request.from_event(event))
        return self.event(event)

    def event(self, event: Event) -> Answer:
        """An event that is not an HTTP request; by default logged and ignored."""
        log("warning", "event ignored: not one this function answers", keys=sorted(event))
        return {"ignored": True}

    def http(self, req: Request) -> Answer:
        started = self.clock()
        user = ""
        try:
            route = self.route(req)
            if not route.auth:
                response = self.serve_open(route, req)
            elif self.s.disable_router:
                response = disabled()
            else:
                claims = self.claims(req)
                user = claims.sub
                response = self.serve(route, req, claims)
        except HttpError as exc:
            response = exc.response()
        latency = round((self.clock() - started) * 1000, 2)
        log("info", "request", requestId=req.request_id, route=req.route, status=response["statusCode"],
            latencyMs=latency, user=user)  # fmt: skip
        return response

    def claims(self, req: Request) -> Claims:
        """The caller's checked id token (401/403 otherwise)."""
        if self.verifier is None:  # only a function without token routes is built without a verifier
            raise HttpError(500, f"{self.function} has no token check for this route")
        from lambdas.common.auth import authenticate  # noqa: PLC0415 (see the imports)

        return authenticate(self.verifier, req.headers.get("authorization"))

    def route(self, req: Request) -> routes.Route:
        """The request's route among this function's; a ``$default`` route (the local edge) is matched by path."""
        for route in routes.ROUTES:
            if route.function == self.function and route.key == req.route:
                return route
        found = routes.match(req.method, req.path)
        if found is not None and found[0].function == self.function:
            return found[0]
        raise HttpError(404, f"no route {req.method} {req.path}")

    def serve(self, route: routes.Route, req: Request, claims: Claims) -> Answer:
        raise HttpError(404, f"no route {route.key}")

    def serve_open(self, route: routes.Route, req: Request) -> Answer:
        raise HttpError(404, f"no route {route.key}")
