"""shadow.gatewayapi.manifests: reading manifests, and every bad input as one located line."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadow.errors import ConfigError
from shadow.gatewayapi.manifests import is_gateway_api_text, read_manifests

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: web}
spec:
  gatewayClassName: shadow
  listeners:
  - {name: http, port: 80, protocol: HTTP}
"""

ROUTE_HEAD = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: web}
spec:
  parentRefs: [{name: gw}]
"""


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_manifests(path)
    return str(info.value.format_message()).replace(str(tmp_path) + "/", "")


def test_documents_are_typed_with_their_place(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(GATEWAY + "---\n" + ROUTE_HEAD + """\
  hostnames: ["*.example.com"]
  rules:
  - matches:
    - path: {type: Exact, value: /a}
      headers: [{name: X-V, value: "1"}]
      queryParams: [{type: RegularExpression, name: q, value: "^x"}]
      method: POST
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: next, port: 80}, fraction: {numerator: 1, denominator: 3}}
    backendRefs: [{name: a, port: 80, weight: 3}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: a}
---
backends: {web/a: "http://127.0.0.1:1"}
""")
    m = read_manifests(path)
    assert [g.doc.key for g in m.gateways] == ["web/gw"]
    route = m.routes[0]
    assert (route.doc.index, route.doc.line) == (2, 9)
    assert route.hostnames == ("*.example.com",)
    match = route.rules[0].matches[0]
    assert (match.path_type, match.path, match.method) == ("Exact", "/a", "POST")
    assert match.headers == (("Exact", "X-V", "1"),) and match.query == (("RegularExpression", "q", "^x"),)
    mirror = route.rules[0].filters[0].mirror
    assert mirror is not None and (mirror.numerator, mirror.denominator, mirror.backend.name) == (1, 3, "next")
    assert route.rules[0].backends[0].weight == 3
    assert [d.kind for d in m.ignored] == ["Deployment"]
    assert m.settings is not None and m.settings[1] == str(path)


def test_defaults_of_the_api_server(tmp_path: Path) -> None:
    """No rules: one rule matching PathPrefix /; no matches: PathPrefix /; namespace default."""
    path = tmp_path / "r.yaml"
    path.write_text(ROUTE_HEAD.replace("namespace: web", "") + "  rules: [{backendRefs: [{name: a, port: 80}]}]\n")
    route = read_manifests(path).routes[0]
    assert route.doc.namespace == "default"
    assert route.rules[0].matches[0].path_type == "PathPrefix" and route.rules[0].matches[0].path == "/"
    path.write_text(ROUTE_HEAD)
    assert read_manifests(path).routes[0].rules[0].backends == ()


def test_a_directory_reads_every_yaml_file_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(ROUTE_HEAD)
    (tmp_path / "a.yml").write_text(GATEWAY)
    (tmp_path / "notes.txt").write_text("not read")
    m = read_manifests(tmp_path)
    assert [Path(s).name for s in m.sources] == ["a.yml", "b.yaml"]
    assert len(m.gateways) == 1 and len(m.routes) == 1


def test_detected_by_content() -> None:
    assert is_gateway_api_text(GATEWAY)
    assert is_gateway_api_text("---\n  apiVersion: 'gateway.networking.k8s.io/v1beta1'\n")
    assert not is_gateway_api_text("http:\n  routers: {}\n")


@pytest.mark.parametrize(("text", "message"), [
    (ROUTE_HEAD + "  rules:\n  - matches:\n    - path: {type: Prefix, value: /a}\n",
     "routes.yaml:8: document 1, HTTPRoute web/r, spec.rules[0].matches[0].path.type: must be one of Exact, "
     "PathPrefix, RegularExpression, got 'Prefix'"),
    (ROUTE_HEAD + "  rules:\n  - matches:\n    - path: {value: a}\n",
     "routes.yaml:8: document 1, HTTPRoute web/r, spec.rules[0].matches[0].path.value: must start with '/', got 'a'"),
    (ROUTE_HEAD + "  rules:\n  - backendRefs: [{name: a, port: 80, weight: -1}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].backendRefs[0].weight: must be between 0 and "
     "1000000, got -1"),
    (ROUTE_HEAD + "  rules:\n  - backendRefs: [{name: a}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].backendRefs[0]: port is required when the "
     "reference is to a Service"),
    (ROUTE_HEAD + "  hostnames: [\"foo.*.com\"]\n",
     "routes.yaml:6: document 1, HTTPRoute web/r, spec.hostnames[0]: not a valid hostname (a leading *. is the "
     "only wildcard): 'foo.*.com'"),
    (ROUTE_HEAD + "  rules:\n  - matches: [{method: FETCH}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].matches[0].method: must be one of GET, HEAD, POST, "
     "PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH, got 'FETCH'"),
    (ROUTE_HEAD + "  rules:\n  - matches: [{headers: [{name: a, value: '1'}, {name: A, value: '2'}]}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].matches[0].headers[1].name: 'A' is matched twice"),
    (ROUTE_HEAD + "  rules:\n  - matches: [{path: {type: RegularExpression, value: '(unclosed'}}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].matches[0].path.value: invalid regular "
     "expression (Go's RE2 syntax): missing ): (unclosed"),
    (ROUTE_HEAD + "  rules:\n  - matches: [{headers: [{type: RegularExpression, name: a, value: 'x(?=y)'}]}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].matches[0].headers[0].value: invalid regular "
     "expression (Go's RE2 syntax): invalid perl operator: (?="),
    (ROUTE_HEAD + "  rules:\n  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, "
     "percent: 101}}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].filters[0].requestMirror.percent: must be between "
     "0 and 100, got 101"),
    (ROUTE_HEAD + "  rules:\n  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, "
     "fraction: {numerator: 3, denominator: 2}}}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].filters[0].requestMirror.fraction: numerator must "
     "not exceed denominator"),
    (ROUTE_HEAD + "  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 305}}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].filters[0].requestRedirect.statusCode: must be "
     "one of 301, 302, 303, 307, 308, got 305"),
    (ROUTE_HEAD + "  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, "
     "urlRewrite: {}}]\n",
     "routes.yaml:1: document 1, HTTPRoute web/r, spec.rules[0].filters: RequestRedirect and URLRewrite cannot "
     "be used together"),
    (ROUTE_HEAD + "  rules:\n  - matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, "
     "urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]\n",
     "routes.yaml:1: document 1, HTTPRoute web/r, spec.rules[0].filters: ReplacePrefixMatch needs every match of "
     "the rule to be a PathPrefix path match"),
    (ROUTE_HEAD + "  rules:\n  - filters: [{type: ExternalAuth, externalAuth: {}}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].filters[0].type: filter ExternalAuth is not "
     "supported yet by the shadow gateway"),
    (ROUTE_HEAD + "  rules:\n  - filters: [{type: CORS, cors: {allowOrigins: [\"foo.com\"]}}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].filters[0].cors.allowOrigins[0]: must be '*' or "
     "scheme://host[:port] (a '*' may stand for part of the host), got 'foo.com'"),
    (ROUTE_HEAD + "  rules:\n  - filters: [{type: CORS, cors: {allowMethods: [GET, \"*\"]}}]\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].filters[0].cors.allowMethods: '*' must be the "
     "only item"),
    (ROUTE_HEAD + "  rules:\n  - sessionPersistence: {sessionName: s}\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].sessionPersistence: not supported yet by the "
     "shadow gateway"),
    (ROUTE_HEAD + "  rules:\n  - timeouts: {request: 1.5s}\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].timeouts.request: invalid duration '1.5s' "
     "(Gateway API durations: 1 to 4 groups of up to 5 digits and a unit h, m, s or ms, e.g. 1s, 500ms, 1m30s)"),
    (ROUTE_HEAD + "  rules:\n  - timeouts: {request: 1s, backendRequest: 2s}\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].timeouts: backendRequest timeout cannot be "
     "longer than request timeout"),
    (ROUTE_HEAD + "  rules:\n  - retry: {codes: [500, 302]}\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].retry.codes[1]: must be an HTTP status code "
     "between 400 and 599, got 302"),
    (ROUTE_HEAD + "  rules:\n  - retry: {attempts: -1}\n",
     "routes.yaml:7: document 1, HTTPRoute web/r, spec.rules[0].retry.attempts: must be between 0 and 1000, "
     "got -1"),
    (ROUTE_HEAD + "  rules:\n  - backendRefs: [{name: a, port: 80, filters: [{type: ResponseHeaderModifier, "
     "responseHeaderModifier: {}}]}]\n",
     "routes.yaml:1: document 1, HTTPRoute web/r, spec.rules[0].backendRefs[0].filters[0].type: "
     "ResponseHeaderModifier on a backendRef is not supported yet by the shadow gateway (only "
     "RequestHeaderModifier; put the others on the rule)"),
    (ROUTE_HEAD + "  rulez: []\n",
     "routes.yaml:6: document 1, HTTPRoute web/r, spec.rulez: unknown field (expected one of parentRefs, "
     "hostnames, rules)"),
    (GATEWAY.replace("  gatewayClassName: shadow\n", ""),
     "routes.yaml:5: document 1, Gateway web/gw, spec.gatewayClassName: required"),
    (GATEWAY + "  - {name: http, port: 81, protocol: HTTP}\n",
     "routes.yaml:8: document 1, Gateway web/gw, spec.listeners[1].name: listener name 'http' is used twice"),
    (GATEWAY.replace("v1\n", "v2\n", 1),
     "routes.yaml:1: document 1, Gateway web/gw, apiVersion: unsupported version 'v2' (expected v1 or v1beta1)"),
    ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: Bad_Name}\nspec: {}\n",
     "routes.yaml:3: document 1, metadata.name: not a valid Kubernetes name: 'Bad_Name'"),
    ("shadow: {}\n---\nbackends: {}\n",
     "routes.yaml:3: document 2: a second document without apiVersion (shadow's settings are already in "
     "routes.yaml)"),
    ("- a list\n", "routes.yaml:1: document 1: expected a mapping (a Kubernetes object), got a list"),
    (GATEWAY + "  bad: [\n", "routes.yaml:9: YAML syntax error: expected the node content, but found '<stream end>' (while parsing a flow node)"),
])
def test_bad_manifests_are_one_located_line(tmp_path: Path, text: str, message: str) -> None:
    assert _error(tmp_path, text) == message


def test_missing_and_empty_sources(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        read_manifests(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"no \.yaml or \.yml file in this directory"):
        read_manifests(tmp_path)


def test_the_shared_readers_bounds_hold(tmp_path: Path) -> None:
    """issue #17: size, nesting and alias expansion are bounded for manifests as for a Traefik file."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True))
    assert "an alias bomb" in _error(tmp_path, "---\n" + bomb)
    assert "larger than a config may be" in _error(tmp_path, GATEWAY + "#" * 300_000 + "\n")


def _places(root: object) -> list[tuple[object, object]]:
    """(container, key or index) of every value under `root`."""
    out: list[tuple[object, object]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            out.append((node, key))
            stack.append(value)
    return out


def test_any_wrong_type_anywhere_is_one_config_error(tmp_path: Path) -> None:
    """Every scalar, list and mapping of the ported conformance manifests swapped, one at a time, for a
    value of another type: the provider loads it or says why in one ConfigError, never anything else."""
    import random

    from ruamel.yaml import YAML

    from shadow.gatewayapi.provider import load_gateway_api

    manifests = Path(__file__).parent / "manifests"
    settings = "---\nbackends: {gateway-conformance-infra/infra-backend-v1: 'http://127.0.0.1:1'}\n"
    rng = random.Random(19)
    yaml = YAML(typ="safe")
    replacements: list[object] = [None, 7, -1, "", "x y", [], ["a"], {}, {"k": "v"}, True, "/../"]
    names = sorted(p.name for p in manifests.glob("httproute-*.yaml"))
    outcomes = {"loaded": 0, "refused": 0}
    for round_ in range(150):  # bounded: 150 mutated manifest sets
        name = names[round_ % len(names)]
        docs = [d for d in yaml.load_all((manifests / name).read_text()) if d]
        doc = rng.choice(docs)
        paths = _places(doc)
        parent, key = rng.choice(paths)
        parent[key] = rng.choice(replacements)  # type: ignore[index]
        out = tmp_path / f"case{round_}.yaml"
        with out.open("w") as fo:
            YAML().dump_all(docs, fo)
        out.write_text((manifests / "base.yaml").read_text() + "\n---\n" + out.read_text() + settings)
        try:
            load_gateway_api(out)
            outcomes["loaded"] += 1
        except ConfigError as exc:
            assert str(out) in exc.format_message() and "\n" not in exc.format_message()
            outcomes["refused"] += 1
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 0, outcomes
