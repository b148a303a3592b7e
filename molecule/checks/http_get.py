"""A request to the model server on 127.0.0.1:8000: argv[1] the path, argv[2] a JSON body to POST (empty: GET).
Prints the answer's body; fails (exit 1, the error on stderr) on an HTTP error or no answer."""

import sys
import urllib.request

body = sys.argv[2].encode() if len(sys.argv) > 2 and sys.argv[2] else None  # noqa: PLR2004
req = urllib.request.Request("http://127.0.0.1:8000" + sys.argv[1], body, {"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=60).read().decode())
