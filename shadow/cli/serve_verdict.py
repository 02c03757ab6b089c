"""`shadow serve-verdict CAPTURE`: the verdict over HTTP for Argo Rollouts / Flagger
(the service is shadow/delivery/verdict_server.py)."""

from __future__ import annotations

from pathlib import Path

import click

from shadow.delivery.verdict_server import (
    VerdictService,
    WindowedVerdicts,
    load_sequential_state,
    make_server,
    subset_verdict_document,
    verdict_document,
)


def parse_listen(value: str, option: str = "--listen") -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint=option)
    return (host.strip("[]") or "127.0.0.1"), int(port_text)


@click.command("serve-verdict")
@click.argument("capture", type=click.Path(path_type=Path, file_okay=False))
@click.option("--listen", default="127.0.0.1:9464", show_default=True, help="HOST:PORT to listen on.")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Analysis policy YAML (margins, alpha, rules); defaults apply without it.")
@click.option("--cache-seconds", default=5.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Reuse a computed verdict for this long.")
@click.option("--learn-endpoints", is_flag=True,
              help="Re-template paths learned from the capture (/users/alice, /users/bob → /users/{name}).")
def serve_verdict(capture: Path, listen: str, policy_file: Path | None, cache_seconds: float,
                  learn_endpoints: bool) -> None:
    """Serve CAPTURE's verdict at /verdict (JSON), /gate (200 pass, 412 fail, 503 inconclusive) and
    /metrics (Prometheus). Each takes ?window=30m (or ?since=TIME) and ?endpoint=GLOB to judge only
    those requests. Argo Rollouts and Flagger examples: docs/examples/progressive-delivery/."""
    from analyzers.pipeline import load_inputs

    host, port = parse_listen(listen)
    policy, rules = load_inputs(policy_file)
    state = load_sequential_state(capture) if policy.sequential else None
    service = VerdictService(lambda: verdict_document(capture, policy, rules, sequential_state=state,
                                                      learn_endpoints=learn_endpoints),
                             cache_seconds=cache_seconds)
    try:
        subsets = WindowedVerdicts(lambda spec: subset_verdict_document(capture, spec, policy, rules,
                                                                        learn_endpoints=learn_endpoints),
                                   cache_seconds=cache_seconds)
        server = make_server(service, host, port, subsets=subsets)
    except OSError as exc:
        from shadow.errors import ShadowError

        raise ShadowError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    service.warm()
    bound_host, bound_port = server.server_address[:2]
    click.echo(f"serving the verdict of {capture} at http://{bound_host!s}:{bound_port}/verdict "
               f"(and /gate, /metrics)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
