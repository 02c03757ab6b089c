"""The CAPTURE argument of the reading commands: a folder, or an object store URI (s3://…).

A URI is fetched into the local cache (shadow.capture.remote: new sealed objects only) and the
command reads that folder, so every command that reads a capture reads a remote one the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shadow.capture.remote import is_remote, resolve_capture


class CaptureLocation(click.ParamType):
    name = "CAPTURE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        if isinstance(value, Path) or not is_remote(str(value)):
            path = Path(value)
            if path.exists() and not path.is_dir():
                self.fail(f"{path}: not a folder (a capture is a folder with an exchanges/ subfolder)", param, ctx)
            return path
        return resolve_capture(str(value))  # CaptureError: one line, exit 2 (shadow.cli.main)


CAPTURE_LOCATION = CaptureLocation()
