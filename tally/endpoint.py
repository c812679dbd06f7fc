"""Which API to talk to, so nobody pastes a URL: the one given, else $TALLY_API, else the named stage's as
`chalice deploy` recorded it (what `chalice url --stage` prints), else local mode's."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from .transport import NotDeployed

LOCAL_API = "http://127.0.0.1:8000"


def resolve_url(url: str | None = None, stage: str | None = None, environ: Mapping[str, str] | None = None,
                project_dir: Path | str | None = None) -> str:
    environ = os.environ if environ is None else environ
    if url:
        return url
    if environ.get("TALLY_API"):
        return environ["TALLY_API"]
    if stage:
        return deployed_url(stage, project_dir)
    return LOCAL_API


def deployed_url(stage: str, project_dir: Path | str | None = None) -> str:
    """The REST API URL `chalice deploy` recorded for `stage`: chalice 1.34's `chalice url` reads it from
    .chalice/deployed/<stage>.json (schema 2.0), the resource named rest_api (chalice/config.py,
    Config.deployed_resources)."""
    path = Path(project_dir or Path.cwd()) / ".chalice" / "deployed" / f"{stage}.json"
    try:
        deployed = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotDeployed(f"stage {stage!r} has no deployed API here ({path} not found): deploy it "
                          f"(`tally deploy --stage {stage}`), run from the project's directory, or give the URL "
                          "(--api, or TALLY_API)") from None
    except ValueError as error:
        raise NotDeployed(f"{path} is not JSON: {error}") from None
    if deployed.get("schema_version", "1.0") != "2.0":
        raise NotDeployed(f"{path}: schema version {deployed.get('schema_version')!r}, not chalice's 2.0")
    for resource in deployed.get("resources", []):
        if resource.get("name") == "rest_api" and resource.get("rest_api_url"):
            return resource["rest_api_url"]
    raise NotDeployed(f"{path} records no REST API for stage {stage!r}")
