"""moto's S3 server for local mode: `python -m moto.server`, without two per-request costs.

- moto routes every request by asking whether the host names one of its service packages, and answers that by
  listing its own package directory: hundreds of stat calls per request, about a quarter of its CPU under load
  (measured with py-spy). The directory cannot change while the server runs, so the answer is computed once.
- It logs a line per request, which local mode sends to /dev/null anyway.
"""
from __future__ import annotations

import sys


def cache_service_lookup() -> None:
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules


def quiet_requests() -> None:
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    MotoRequestHandler.log_request = lambda self, code="-", size="-": None


if __name__ == "__main__":
    cache_service_lookup()
    quiet_requests()
    from moto.server import main

    main(sys.argv[1:])
