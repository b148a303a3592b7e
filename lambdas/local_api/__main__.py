"""``python -m lambdas.local_api [--host 127.0.0.1] [--port 8080]``: serve the API on localhost.

Reads the same ``TL_*`` variables as the functions (docs/operations.md, "Configuration of the functions").
"""

from __future__ import annotations

import argparse

import uvicorn

from lambdas.local_api.app import LocalEdge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(LocalEdge.from_env(), host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
