"""moto's S3 server for local mode: `python -m moto.server`, without one per-request cost.

moto routes every request by asking whether the host names one of its service packages, and answers that by
listing its own package directory: hundreds of stat calls per request, about a quarter of its CPU under load
(measured with py-spy). The directory cannot change while the server runs, so the answer is computed once.
"""
from __future__ import annotations

import sys


def cache_service_lookup() -> None:
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules


if __name__ == "__main__":
    cache_service_lookup()
    from moto.server import main

    main(sys.argv[1:])
