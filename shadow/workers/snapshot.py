"""The validated configuration every worker loads.

The supervisor validates the user's file once and writes exactly those bytes to a snapshot file
in its private run folder; each worker loads the snapshot as if it were the user's file (errors
name the user's file, relative paths resolve against its folder). So every worker runs the same
validated bytes, a worker restarted while the user's file holds an invalid edit starts with the
last valid configuration, and an edit made while the workers reload cannot reach some of them only.

Gateway API manifests (a directory, or a file of gateway.networking.k8s.io documents) are not
snapshotted: workers read them in place (see docs/scale-out.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shadow.capture.atomic import replace_text
from shadow.gateway.config import GatewayConfig, Service, parse_config
from shadow.gatewayapi.provider import is_gateway_api_source, load_gateway_config
from shadow.yamlconfig import read_yaml_file

__all__ = ["load_snapshot", "read_validated", "snapshots_supported", "write_snapshot"]


def snapshots_supported(origin: Path) -> bool:
    """A single Traefik-style file is snapshotted; Gateway API manifests are read in place."""
    return not is_gateway_api_source(origin)


def read_validated(origin: Path) -> tuple[GatewayConfig, str | None]:
    """Read and validate the user's config once: (config, the text to snapshot, or None when the
    source is read in place). Raises ConfigError (one line: file, line, field)."""
    if not snapshots_supported(origin):
        return load_gateway_config(origin), None
    text = read_yaml_file(origin)
    return parse_config(text, str(origin), base_dir=origin.parent), text


def write_snapshot(snapshot: Path, text: str) -> None:
    """Replace the snapshot atomically (a worker reading it sees the old bytes or the new)."""
    replace_text(snapshot, lambda out: out.write(text))


def load_snapshot(snapshot: str | Path, origin: str | Path, *,
                  generated: Mapping[str, Service] | None = None) -> GatewayConfig:
    """The configuration in `snapshot`, read as the user's file `origin` (`generated`: the
    multi-cluster provider's services, as load_gateway_config takes them)."""
    origin = Path(origin)
    return parse_config(read_yaml_file(Path(snapshot)), str(origin), base_dir=origin.parent, generated=generated)
