"""moto's own WSGI app, served with HTTP/1.1 keep-alive (waitress): for the agent's benchmark only.

S3 keeps a client's connection open for the next request (HTTP/1.1's persistent connections; the AWS SDKs reuse
them by default: "Reuse connections with keep-alive in Node.js", AWS SDK for JavaScript v3 Developer Guide). moto's
server (werkzeug's) closes each connection after its answer, so an agent measured against it pays a TCP connect and
close for every reply it stores, which it does not pay on AWS. ``bench/agent.py`` measures the agent's CPU per job
against this server and reports the figure against moto's own beside it; the tests keep moto's own.

    python -m devstack.moto_keepalive HOST PORT
"""

from __future__ import annotations

import os
import sys

import waitress
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto's own server sets it (its URLs name the port)
    waitress.serve(DomainDispatcherApplication(create_backend_app), host=host, port=port, threads=8, ident="moto")


if __name__ == "__main__":
    main()
