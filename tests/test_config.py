"""Config loader: the model it builds, and a located one-line error for every kind of bad file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shadow.capture.settings import DEFAULT_REDACTED_HEADERS
from shadow.errors import ConfigError
from shadow.gateway.config import (
    AddPrefix,
    HeadersMiddleware,
    LoadBalancerService,
    MirroringService,
    MirrorSpec,
    StripPrefix,
    load_config,
    parse_config,
)
from shadow.gateway.mirror import ResendSettings
from shadow.yamlconfig import parse_duration

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"

BASE = """\
http:
  routers:
    orders:
      rule: PathPrefix(`/api/orders`)
      service: app
  services:
    app:
      loadBalancer:
        servers:
          - url: http://127.0.0.1:8081
"""


def test_example_gateway_config_loads() -> None:
    cfg = load_config(EXAMPLES / "gateway.yaml")
    assert [r.name for r in cfg.routers] == ["orders", "monolith"]
    orders = cfg.routers[0]
    assert orders.priority == len(orders.rule.text)
    assert orders.middlewares == ("tag-gateway",)
    shadow_svc = cfg.services["orders-shadow"]
    assert isinstance(shadow_svc, MirroringService)
    assert shadow_svc.service == "monolith"
    assert shadow_svc.mirrors == (MirrorSpec("orders-next", 100),)
    assert cfg.shadow.gateway_id == "gw-1"
    assert cfg.shadow.capture.dir == EXAMPLES / "capture"
    assert cfg.shadow.mirroring.target("orders-next").role == "candidate"
    assert cfg.shadow.endpoints == ("/api/orders/{id}",)
    assert cfg.summary() == "2 routers, 3 services, 1 middlewares, 1 mirrors"


def test_example_passthrough_config_loads() -> None:
    cfg = load_config(EXAMPLES / "passthrough.yaml")
    assert [r.name for r in cfg.routers] == ["all"]
    assert cfg.routers[0].rule.text == "PathPrefix(`/`)"
    monolith = cfg.services["monolith"]
    assert isinstance(monolith, LoadBalancerService)
    assert monolith.servers[0].port == 8081


def test_defaults_of_a_minimal_file() -> None:
    cfg = parse_config(BASE, "gw.yaml", base_dir=Path("/srv/gw"))
    app = cfg.services["app"]
    assert isinstance(app, LoadBalancerService)
    assert app.pass_host_header is True
    assert app.servers[0].url == "http://127.0.0.1:8081"
    assert cfg.shadow.capture.dir == Path("/srv/gw/capture")
    assert cfg.shadow.capture.redaction.headers == DEFAULT_REDACTED_HEADERS
    assert cfg.shadow.mirroring.timeout_s == 5.0
    assert cfg.shadow.mirroring.resend == ResendSettings(enabled=True, percent=5, per_endpoint=50, window_s=60.0)
    assert cfg.shadow.gateway_id is None
    assert dict(cfg.shadow.analysis) == {}
    assert cfg.source == "gw.yaml"


def test_server_urls_are_normalised() -> None:
    text = BASE.replace("http://127.0.0.1:8081", "HTTPS://API.Example.com:443/base/") + \
        "          - url: http://[::1]:9000\n            weight: 3\n            preservePath: true\n"
    servers = parse_config(text).services["app"].servers  # type: ignore[union-attr]
    assert (servers[0].url, servers[0].scheme, servers[0].host, servers[0].port, servers[0].path) == \
        ("https://api.example.com/base", "https", "api.example.com", 443, "/base")
    assert (servers[1].url, servers[1].host, servers[1].port, servers[1].weight, servers[1].preserve_path) == \
        ("http://[::1]:9000", "::1", 9000, 3, True)


def test_routers_sorted_by_priority_then_name() -> None:
    text = """\
http:
  routers:
    catchall: {rule: "PathPrefix(`/`)", service: app}
    b-long:   {rule: "PathPrefix(`/api/orders`)", service: app}
    a-long:   {rule: "PathPrefix(`/api/orderz`)", service: app}
    pinned:   {rule: "PathPrefix(`/`)", service: app, priority: 1000}
    low:      {rule: "PathPrefix(`/api/orders/very/long/path`)", service: app, priority: 1}
  services:
    app: {loadBalancer: {servers: [{url: "http://h"}]}}
"""
    cfg = parse_config(text)
    assert [(r.name, r.priority) for r in cfg.routers] == [
        ("pinned", 1000), ("a-long", 25), ("b-long", 25), ("catchall", 15), ("low", 1)]


def test_option_names_are_case_insensitive_like_traefik() -> None:
    text = """\
HTTP:
  Routers:
    Orders: {RULE: "Path(`/`)", service: app, Middlewares: [strip]}
  services:
    app:
      loadbalancer:
        SERVERS: [{URL: "http://h:1"}]
        passhostheader: false
  middlewares:
    strip: {stripprefix: {Prefixes: [/x]}}
"""
    cfg = parse_config(text)
    assert [(r.name, r.service, r.middlewares) for r in cfg.routers] == [("Orders", "app", ("strip",))]
    app = cfg.services["app"]
    assert isinstance(app, LoadBalancerService) and app.pass_host_header is False
    assert cfg.middlewares["strip"] == StripPrefix("strip", ("/x",))
    # names are not options: a service called "App" is not "app"
    with pytest.raises(ConfigError, match="no service named 'App'"):
        parse_config(text.replace("service: app", "service: App"))


def test_middlewares_and_provider_suffix() -> None:
    text = BASE.replace("      service: app\n",
                        "      service: app@file\n      middlewares: [strip, add@file, hdr]\n") + """\
  middlewares:
    strip: {stripPrefix: {prefixes: [/api, /v1]}}
    add: {addPrefix: {prefix: /internal}}
    hdr:
      headers:
        customRequestHeaders: {X-Env: prod, X-Drop: ""}
        customResponseHeaders: {Server: "", X-Version: 2}
"""
    cfg = parse_config(text)
    assert cfg.routers[0].service == "app"
    assert cfg.routers[0].middlewares == ("strip", "add", "hdr")
    assert cfg.middlewares["strip"] == StripPrefix("strip", ("/api", "/v1"))
    assert cfg.middlewares["add"] == AddPrefix("add", "/internal")
    assert cfg.middlewares["hdr"] == HeadersMiddleware(
        "hdr", (("X-Env", "prod"), ("X-Drop", "")), (("Server", ""), ("X-Version", "2")))


def test_shadow_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "s3cret")
    text = BASE + """\
    next:
      loadBalancer: {servers: [{url: "http://127.0.0.1:8082"}]}
    mir:
      mirroring: {service: app, mirrors: [{name: next, percent: 33}]}
shadow:
  gateway: {id: gw-7}
  capture: {dir: /var/cap, enabled: false, maxBodyBytes: 10, segmentRows: 5, segmentSeconds: 250ms, maxQueue: 7}
  redaction: {mode: remove, keyEnv: MY_KEY, headers: [X-Api-Key, Cookie], jsonFields: [password, /card/number]}
  mirroring:
    timeout: 1m30s
    maxInFlight: 8
    targets: {next: {role: secondary, allowUnsafe: true}}
    resend: {enabled: false, percent: 20, perEndpoint: 7, window: 30s}
  endpoints: ["/api/orders/{id}"]
  analysis: {latency: {alpha: 0.05}, diff: {ignore: [/ts]}}
"""
    sh = parse_config(text).shadow
    assert sh.gateway_id == "gw-7"
    cap = sh.capture
    assert (cap.dir, cap.enabled, cap.max_body_bytes, cap.segment_rows, cap.segment_seconds, cap.max_queue) == \
        (Path("/var/cap"), False, 10, 5, 0.25, 7)
    assert cap.redaction.mode == "remove"
    assert cap.redaction.key == b"s3cret"
    assert cap.redaction.headers == (*DEFAULT_REDACTED_HEADERS, "x-api-key")
    assert cap.redaction.json_fields == ("password", "/card/number")
    assert sh.mirroring.timeout_s == 90.0
    assert sh.mirroring.max_in_flight == 8
    assert sh.mirroring.target("next").role == "secondary"
    assert sh.mirroring.target("next").allow_unsafe is True
    assert sh.mirroring.resend == ResendSettings(enabled=False, percent=20, per_endpoint=7, window_s=30.0)
    assert sh.endpoints == ("/api/orders/{id}",)
    assert sh.analysis == {"latency": {"alpha": 0.05}, "diff": {"ignore": ["/ts"]}}
    assert type(sh.analysis["latency"]) is dict


@pytest.mark.parametrize(("text", "seconds"), [
    ("5s", 5.0), ("250ms", 0.25), ("1m", 60.0), ("1h30m", 5400.0), ("1.5s", 1.5), (3, 3.0), ("2", 2.0),
])
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 s", "s", "-1s", "1d", "nan", "inf", float("inf"), -2, True, None])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# --- bad files: every error names file, line and field -----------------------------------------

def edit(old: str, new: str, base: str = BASE) -> str:
    assert old in base
    return base.replace(old, new, 1)


BAD_CONFIGS = [
    # (id, yaml, line, field, words in the message)
    ("rule-syntax", edit("PathPrefix(`/api/orders`)", "PathPrefix(`/api/orders`))"), 4,
     "http.routers.orders.rule", "unexpected ')' at column 26"),
    ("rule-unknown-matcher", edit("PathPrefix(`/api/orders`)", "Paht(`/x`)"), 4,
     "http.routers.orders.rule", "did you mean Path"),
    ("unknown-router-key", edit("      service: app\n", "      service: app\n      priorty: 5\n"), 6,
     "http.routers.orders.priorty", "did you mean 'priority'"),
    ("unknown-service-key", edit("      loadBalancer:", "      loadBalancr:"), 8,
     "http.services.app.loadBalancr", "did you mean 'loadBalancer'"),
    ("same-option-twice", edit("        servers:", "        passHostHeader: true\n        passhostheader: false\n"
                               "        servers:"), 10,
     "http.services.app.loadBalancer.passhostheader", "same option"),
    ("unknown-top-key", "htpp:\n  routers: {}\n", 1, "htpp", "did you mean 'http'"),
    ("priority-type", edit("      service: app\n", "      service: app\n      priority: high\n"), 6,
     "http.routers.orders.priority", "expected an integer"),
    ("priority-too-high", edit("      service: app\n", "      service: app\n      priority: 9223372036854775000\n"),
     6, "http.routers.orders.priority", "must be at most 9223372036854774807"),
    ("pass-host-type", edit("        servers:", "        passHostHeader: yes please\n        servers:"), 9,
     "http.services.app.loadBalancer.passHostHeader", "expected true or false"),
    ("rule-type", edit("rule: PathPrefix(`/api/orders`)", "rule: [a]"), 4,
     "http.routers.orders.rule", "expected a string"),
    ("rule-missing", edit("      rule: PathPrefix(`/api/orders`)\n", ""), 4,
     "http.routers.orders.rule", "required"),
    ("missing-service", edit("service: app", "service: apq"), 5,
     "http.routers.orders.service", "no service named 'apq' (did you mean 'app'?)"),
    ("missing-middleware", edit("      service: app\n", "      service: app\n      middlewares: [a, auth]\n") +
     "  middlewares:\n    a: {addPrefix: {prefix: /x}}\n", 6,
     "http.routers.orders.middlewares[1]", "no middleware named 'auth'"),
    ("other-provider", edit("service: app", "service: app@docker"), 5,
     "http.routers.orders.service", "provider 'docker'"),
    ("mirror-missing-service", BASE + "    mir:\n      mirroring:\n        service: app\n"
     "        mirrors:\n          - name: nxt\n            percent: 10\n", 15,
     "http.services.mir.mirroring.mirrors[0].name", "no service named 'nxt'"),
    ("mirror-main-missing", BASE + "    mir:\n      mirroring:\n        service: nope\n", 13,
     "http.services.mir.mirroring.service", "no service named 'nope'"),
    ("percent-high", BASE + "    mir:\n      mirroring:\n        service: app\n"
     "        mirrors:\n          - name: app\n            percent: 101\n", 16,
     "http.services.mir.mirroring.mirrors[0].percent", "between 0 and 100"),
    ("mirror-twice", BASE + "    mir:\n      mirroring:\n        service: app\n"
     "        mirrors:\n          - {name: app, percent: 10}\n          - {name: app, percent: 5}\n", 16,
     "http.services.mir.mirroring.mirrors[1].name", "mirror 'app' is listed twice"),
    ("percent-negative", BASE + "    mir:\n      mirroring:\n        service: app\n"
     "        mirrors: [{name: app, percent: -1}]\n", 14,
     "http.services.mir.mirroring.mirrors[0].percent", "between 0 and 100"),
    ("percent-type", BASE + "    mir:\n      mirroring:\n        service: app\n"
     "        mirrors: [{name: app, percent: 10%}]\n", 14,
     "http.services.mir.mirroring.mirrors[0].percent", "expected an integer"),
    ("empty-servers", edit("          - url: http://127.0.0.1:8081\n", ""), 9,
     "http.services.app.loadBalancer.servers", "at least one server"),
    ("empty-servers-list", edit("        servers:\n          - url: http://127.0.0.1:8081\n",
                                "        servers: []\n"), 9,
     "http.services.app.loadBalancer.servers", "at least one server"),
    ("bad-url-scheme", edit("http://127.0.0.1:8081", "ftp://127.0.0.1"), 10,
     "http.services.app.loadBalancer.servers[0].url", "scheme must be http or https"),
    ("bad-url-host", edit("http://127.0.0.1:8081", "http://"), 10,
     "http.services.app.loadBalancer.servers[0].url", "no host"),
    ("bad-url-port", edit("http://127.0.0.1:8081", "http://h:99999"), 10,
     "http.services.app.loadBalancer.servers[0].url", "bad URL"),
    ("bad-url-space", edit("http://127.0.0.1:8081", "http://my host/"), 10,
     "http.services.app.loadBalancer.servers[0].url", "not a host name"),
    ("bad-url-query", edit("http://127.0.0.1:8081", "http://h/x?y=1"), 10,
     "http.services.app.loadBalancer.servers[0].url", "no query"),
    ("url-missing", edit("          - url: http://127.0.0.1:8081\n", "          - weight: 1\n"), 10,
     "http.services.app.loadBalancer.servers[0].url", "required"),
    ("duplicate-key", edit("      service: app\n", "      service: app\n      service: app\n"), 6,
     "http.routers.orders.service", "duplicate key"),
    ("duplicate-router", BASE + "  routers:\n    x: {rule: Path(`/`), service: app}\n", 11,
     "http.routers", "duplicate key"),
    ("yaml-syntax", "http:\n  routers: {orders: [\n", 3, None, "YAML syntax error"),
    ("yaml-tab", "http:\n\trouters: {}\n", 2, None, "YAML syntax error"),
    ("weighted-unknown-child", BASE + "    w:\n      weighted:\n        services: [{name: nope}]\n", 13,
     "http.services.w.weighted.services[0].name", "no service named 'nope'"),
    ("failover-bad-range", BASE + "    f:\n      failover: {service: app, fallback: app, errors: {status: [500-40]}}\n",
     12, "http.services.f.failover.errors.status[0]", "bad status range"),
    ("health-check-relative", edit("        servers:", "        healthCheck: {path: health}\n        servers:"), 9,
     "http.services.app.loadBalancer.healthCheck.path", "must be relative to the server and start with '/'"),
    ("service-kind-missing", BASE + "    x: {}\n", 11, "http.services.x", "needs one of"),
    ("unknown-middleware-type", BASE + "  middlewares:\n    m:\n      stripPrefixes: {prefixes: [/a]}\n", 13,
     "http.middlewares.m.stripPrefixes", "unknown middleware type (did you mean 'stripPrefix'?)"),
    ("unsupported-middleware", BASE + "  middlewares:\n    m:\n      grpcWeb: {allowOrigins: [a]}\n", 13,
     "http.middlewares.m.grpcWeb", "not supported by the shadow gateway"),
    ("bad-header-name", BASE + "  middlewares:\n    m:\n      headers:\n        customRequestHeaders:\n"
     "          X Bad: 1\n", 15, "http.middlewares.m.headers.customRequestHeaders.X Bad", "bad header name"),
    ("header-value-type", BASE + "  middlewares:\n    m:\n      headers:\n        customResponseHeaders:\n"
     "          X-A: [1]\n", 15, "http.middlewares.m.headers.customResponseHeaders.X-A", "expected a string"),
    ("strip-prefix-empty", BASE + "  middlewares:\n    m:\n      stripPrefix: {prefixes: []}\n", 13,
     "http.middlewares.m.stripPrefix.prefixes", "at least one prefix"),
    ("add-prefix-relative", BASE + "  middlewares:\n    m:\n      addPrefix: {prefix: api}\n", 13,
     "http.middlewares.m.addPrefix.prefix", "must start with '/'"),
    ("cycle", BASE + "    m1:\n      mirroring: {service: m2}\n    m2:\n      mirroring: {service: m1}\n", 14,
     "http.services.m2.mirroring.service", "cycle: m1 -> m2 -> m1"),
    ("nested-mirroring", BASE + "    m1:\n      mirroring: {service: app}\n    m2:\n"
     "      mirroring: {service: m1}\n", 14, "http.services.m2.mirroring.service", "nested mirroring"),
    ("mirror-is-mirroring", BASE + "    m1:\n      mirroring: {service: app}\n    m2:\n"
     "      mirroring: {service: app, mirrors: [{name: m1, percent: 5}]}\n", 14,
     "http.services.m2.mirroring.mirrors[0].name", "must be a loadBalancer"),
    ("router-tls-resolver", edit("      service: app\n", "      service: app\n      tls: {certResolver: le}\n"), 6,
     "http.routers.orders.tls.certResolver", "not supported yet"),
    ("routers-not-mapping", "http:\n  routers: [a, b]\n", 2, "http.routers", "expected a mapping"),
    ("tcp", BASE + "tcp: {}\n", 11, "tcp", "not supported yet"),
    ("shadow-unknown", BASE + "shadow:\n  capture:\n    dirr: x\n", 13, "shadow.capture.dirr",
     "did you mean 'dir'"),
    ("shadow-timeout", BASE + "shadow:\n  mirroring:\n    timeout: 5 seconds\n", 13,
     "shadow.mirroring.timeout", "not a duration"),
    ("shadow-mode", BASE + "shadow:\n  redaction: {mode: encrypt}\n", 12, "shadow.redaction.mode",
     "hash or remove"),
    ("shadow-key-env", BASE + "shadow:\n  redaction:\n    keyEnv: SHADOW_TEST_SURELY_UNSET_VAR\n", 13,
     "shadow.redaction.keyEnv", "is not set"),
    ("shadow-target", BASE + "shadow:\n  mirroring:\n    targets:\n      ap: {role: candidate}\n", 14,
     "shadow.mirroring.targets.ap", "no service named 'ap'"),
    ("shadow-role", BASE + "shadow:\n  mirroring:\n    targets:\n      app: {role: primary}\n", 14,
     "shadow.mirroring.targets.app.role", "candidate or secondary"),
    ("shadow-resend-key", BASE + "shadow:\n  mirroring:\n    resend: {perEndpont: 5}\n", 13,
     "shadow.mirroring.resend.perEndpont", "did you mean 'perEndpoint'"),
    ("shadow-resend-percent", BASE + "shadow:\n  mirroring:\n    resend:\n      percent: 101\n", 14,
     "shadow.mirroring.resend.percent", "between 0 and 100"),
    ("shadow-resend-cap", BASE + "shadow:\n  mirroring:\n    resend:\n      perEndpoint: 0\n", 14,
     "shadow.mirroring.resend.perEndpoint", "at least 1"),
    ("shadow-resend-window", BASE + "shadow:\n  mirroring:\n    resend:\n      window: 0s\n", 14,
     "shadow.mirroring.resend.window", "must be positive"),
    ("shadow-resend-enabled", BASE + "shadow:\n  mirroring:\n    resend: {enabled: sometimes}\n", 13,
     "shadow.mirroring.resend.enabled", "expected true or false"),
    ("shadow-resend-type", BASE + "shadow:\n  mirroring:\n    resend: on\n", 13,
     "shadow.mirroring.resend", "expected a mapping"),
    ("shadow-segment-rows", BASE + "shadow:\n  capture: {segmentRows: 0}\n", 12,
     "shadow.capture.segmentRows", "at least 1"),
    ("shadow-endpoint", BASE + "shadow:\n  endpoints: [/ok, bad]\n", 12, "shadow.endpoints[1]",
     "must start with '/'"),
    ("shadow-analysis-type", BASE + "shadow:\n  analysis: [1]\n", 12, "shadow.analysis", "expected a mapping"),
]


@pytest.mark.parametrize(("text", "line", "field", "words"),
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_CONFIGS])
def test_bad_config_is_located(text: str, line: int, field: str | None, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "gw.yaml")
    e = err.value
    assert (e.file, e.line, e.field) == ("gw.yaml", line, field), str(e)
    assert words in e.reason, str(e)
    prefix = f"gw.yaml:{line}: {field}: " if field else f"gw.yaml:{line}: "
    assert str(e).startswith(prefix), str(e)
    assert "\n" not in str(e)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml: empty configuration file"):
        load_config(empty)
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"http:\n  x: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bin\.yaml:2: not UTF-8"):
        load_config(binary)


def test_load_config_resolves_capture_dir_next_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "gw.yaml"
    path.parent.mkdir()
    path.write_text(BASE + "shadow:\n  capture: {dir: ../cap}\n")
    cfg = load_config(path)
    assert cfg.shadow.capture.dir == tmp_path / "conf" / ".." / "cap"
    assert cfg.source == str(path)


# --- shadow config check: one line, exit 0 or 2, never a traceback ----------------------------

def start_check(path: Path | str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "shadow.cli", "config", "check", str(path), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_config_check_cli(tmp_path: Path) -> None:
    bad_files = {
        "rule.yaml": edit("PathPrefix(`/api/orders`)", "PathPrefix(`/api/orders`))"),
        "yaml.yaml": "http:\n  routers: {orders: [\n",
        "empty.yaml": "",
        "binary.yaml": None,
        "list.yaml": "- 1\n- 2\n",
        "mirror.yaml": BASE + "    mir:\n      mirroring: {service: app, mirrors: [{name: x, percent: 5}]}\n",
        # a pattern Go's RE2 refuses (a backreference): rejected as Traefik would, with the line
        "re2.yaml": edit("PathPrefix(`/api/orders`)", "PathRegexp(`^/(a)\\1$`)"),
    }
    expected = {"rule.yaml": ":4: http.routers.orders.rule: unexpected ')' at column 26",
                "yaml.yaml": ":3: YAML syntax error", "empty.yaml": ": empty configuration file",
                "binary.yaml": ":1: not UTF-8", "list.yaml": ":1: expected a mapping",
                "mirror.yaml": ":12: http.services.mir.mirroring.mirrors[0].name: no service named 'x'",
                "re2.yaml": ":4: http.routers.orders.rule: invalid regular expression `^/(a)\\1$` (Go's RE2 "
                            "syntax): invalid escape sequence: \\1"}
    for name, text in bad_files.items():
        path = tmp_path / name
        if text is None:
            path.write_bytes(b"\x80\x81\n")
        else:
            path.write_text(text)
    # all processes at once: the interpreter start-up dominates and overlaps on two cores
    ok = start_check(EXAMPLES / "gateway.yaml")
    bad = {name: start_check(tmp_path / name) for name in bad_files}
    missing = start_check(tmp_path / "missing.yaml")
    helped = start_check("--help")

    code, out, err = finish(ok)
    assert code == 0, err
    assert out.strip().endswith("gateway.yaml: 2 routers, 3 services, 1 middlewares, 1 mirrors")
    assert len(out.strip().splitlines()) == 1
    for name, proc in bad.items():
        code, out, err = finish(proc)
        assert code == 2, (name, out, err)
        assert err.startswith(f"error: {tmp_path / name}{expected[name]}"), (name, err)
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    code, _, err = finish(missing)
    assert code == 2
    assert err.strip() == f"error: {tmp_path / 'missing.yaml'}: no such file"
    code, out, _ = finish(helped)
    assert code == 0 and "Validate FILE" in out


def test_mangled_files_give_config_errors_never_other_exceptions() -> None:
    # Random edits of the example (fixed seed, bounded): every outcome is a config or a ConfigError.
    import random

    rng = random.Random(7)
    lines = (EXAMPLES / "gateway.yaml").read_text().splitlines()
    pieces = [*":-[]{}'\"`&|!()#\t ,*?%@\\", "\n", "true", "null", "1", "-1", "x", "? "]
    errors = 0
    for _ in range(80):
        edited = list(lines)
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(edited))
            op = rng.random()
            if op < 0.25:
                del edited[j]
            elif op < 0.45:
                edited.insert(j, edited[rng.randrange(len(edited))])
            else:
                k = rng.randrange(len(edited[j]) + 1)
                cut = 1 if op < 0.8 else 0
                edited[j] = edited[j][:k] + rng.choice(pieces) + edited[j][k + cut:]
        try:
            parse_config("\n".join(edited), "f.yaml")
        except ConfigError as exc:
            errors += 1
            assert str(exc).startswith("f.yaml") and "\n" not in str(exc), str(exc)
    assert errors > 20  # the edits do break files


def test_config_check_verbose_lists_routers_in_the_order_tried() -> None:
    from click.testing import CliRunner

    from shadow.cli.config import config

    result = CliRunner().invoke(config, ["check", "-v", str(EXAMPLES / "gateway.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("ok: ")
    assert lines[1].split() == ["47", "orders:", "PathPrefix(`/api/orders`)", "&&", "!Method(`OPTIONS`)", "->",
                                "monolith", "+", "mirrors", "orders-next", "100%", "via", "tag-gateway"]
    assert lines[2].split() == ["15", "monolith:", "PathPrefix(`/`)", "->", "monolith"]
