"""60 requests to https://127.0.0.1/v1/models with one bearer token (argv[1]), 16 at a time: prints the sorted
set of statuses as JSON (the burst served, the rest limited: [200, 429])."""

import concurrent.futures
import json
import ssl
import sys
import urllib.error
import urllib.request

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # the node's own self-signed certificate


def one(_: int) -> int:
    req = urllib.request.Request("https://127.0.0.1/v1/models", headers={"Authorization": sys.argv[1]})
    try:
        return urllib.request.urlopen(req, context=ctx, timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code


with concurrent.futures.ThreadPoolExecutor(16) as pool:
    print(json.dumps(sorted(set(pool.map(one, range(60))))))
