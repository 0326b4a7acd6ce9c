"""ExecStartPost= of purellm.service: return once `GET /health` answers 200.

purellm's /health answers 503 while the model loads and 200 once it can serve, so with this
as ExecStartPost the unit becomes active (and units ordered after it start) only when the
model is loaded. There is no timeout here: systemd's TimeoutStartSec= bounds the whole start,
and if `purellm serve` exits first, systemd stops this script and the unit fails (and
Restart=on-failure starts it again).

Usage: wait-ready.py URL. If the unit has an API key (LoadCredential=api-key:...), it is sent
as a bearer token, read from $CREDENTIALS_DIRECTORY so it never appears on a command line.
Proxies from the environment are ignored: this always talks to the local server.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request


def _headers() -> dict[str, str]:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    try:
        with open(os.path.join(directory, "api-key"), encoding="utf-8") as handle:
            key = handle.read().strip()
    except OSError:
        return {}
    return {"Authorization": f"Bearer {key}"} if key else {}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: wait-ready.py URL", file=sys.stderr)
        return 2
    url = argv[1]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=_headers())
    last = ""
    while True:
        try:
            with opener.open(request, timeout=10) as response:
                if response.status == 200:
                    print(f"purellm is ready: {url} answered 200", flush=True)
                    return 0
                state = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:  # 503 while the model loads
            state = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:  # not listening yet
            state = f"not answering ({getattr(error, 'reason', error)})"
        if state != last:
            print(f"waiting for {url}: {state}", flush=True)
            last = state
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
