"""One HTTPS request to nginx on 127.0.0.1: method, path, Authorization (or -), JSON body (or -), TLS version (or -).

Prints, as JSON, the status, the headers that matter, and the body or, for a stream, how many events came and
the first one's text. A TLS refusal is status 0 with the error.
"""

import json
import ssl
import sys
import urllib.error
import urllib.request

method, path, auth, body, version = sys.argv[1:6]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # the node's own self-signed certificate
if version != "-":
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")  # so that a refusal of an old version is the server's
headers = {"Content-Type": "application/json"}
if auth != "-":  # the header's bytes as given (UTF-8 garbage too): http.client sends str as latin-1
    headers["Authorization"] = auth.encode().decode("latin-1")
data = None if body == "-" else body.encode()
req = urllib.request.Request("https://127.0.0.1" + path, data, headers, method=method)
out: dict = {}
try:
    resp = urllib.request.urlopen(req, context=ctx, timeout=60)
    out["status"] = resp.status
    if "stream" in body:
        events = [line for line in resp if line.startswith(b"data:")]
        out["events"] = len(events)
        out["first_text"] = events[0].decode()[:200] if events else ""
    else:
        out["body"] = json.load(resp)
    out["hsts"] = resp.headers.get("Strict-Transport-Security")
except urllib.error.HTTPError as e:
    out.update(status=e.code, www=e.headers.get("WWW-Authenticate"), text=e.read().decode()[:300])
except (ssl.SSLError, OSError) as e:
    out.update(status=0, error=str(e))
print(json.dumps(out))
