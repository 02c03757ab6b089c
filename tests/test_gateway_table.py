"""shadow/gateway/table.py: the router table (`shadow config check -v`, the live view's routers page)
and the warning about split traffic that can never be judged; `config check` on a canary plan."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from shadow.cli.config import config
from shadow.gateway.config import parse_config
from shadow.gateway.table import router_table, split_warnings

REPO = Path(__file__).resolve().parent.parent

SPLIT = """
http:
  routers:
    orders: {rule: "PathPrefix(`/api/orders`)", service: orders-split}
    rest: {rule: "PathPrefix(`/`)", service: mono-shadowed}
  services:
    mono: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
    mono-b: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
    next: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
    orders-split: {weighted: {services: [{name: mono, weight: 9}, {name: next, weight: 1}]}}
    mono-shadowed: {mirroring: {service: mono, mirrors: [{name: mono-b, percent: 5}]}}
shadow:
  mirroring: {targets: {mono-b: {role: secondary}}}
"""


def test_rows_in_the_order_tried_with_splits_and_mirrors() -> None:
    rows = router_table(parse_config(SPLIT, "split.yaml"))
    assert [r.name for r in rows] == ["orders", "rest"]
    orders, rest = rows
    assert orders.target == "orders-split" and orders.split == (("mono", 9), ("next", 1)) and not orders.mirrors
    assert rest.target == "mono" and rest.service == "mono-shadowed"
    assert [(m.name, m.share, m.role) for m in rest.mirrors] == [("mono-b", "5%", "secondary")]
    assert rest.line().split() == ["15", "rest:", "PathPrefix(`/`)", "->", "mono", "+", "mirrors", "mono-b", "5%"]


def test_a_split_without_a_declared_candidate_is_a_warning(tmp_path: Path) -> None:
    (warning,) = split_warnings(parse_config(SPLIT, "split.yaml"))
    assert "'orders-split'" in warning and "mono, next" in warning and "shadow.split.candidates" in warning
    declared = SPLIT + "  split: {candidates: [next]}\n"
    assert split_warnings(parse_config(declared, "split.yaml")) == []
    file = tmp_path / "split.yaml"
    file.write_text(SPLIT)
    out = CliRunner().invoke(config, ["check", str(file)])
    assert out.exit_code == 0 and out.output.splitlines()[1].startswith("warning: weighted service 'orders-split'")


def test_config_check_recognises_a_canary_plan(tmp_path: Path) -> None:
    out = CliRunner().invoke(config, ["check", str(REPO / "docs" / "examples" / "canary-plan.yaml")])
    assert out.exit_code == 0, out.output
    assert "canary plan: orders-next-safe of orders-split through 5 % → 25 % → 50 % → 100 %" in out.output
    bad = tmp_path / "plan.yaml"
    bad.write_text(f"gateway: {REPO / 'docs' / 'examples' / 'shifting.yaml'}\nservice: orders-split\n"
                   "child: nope\nsteps: [5, 50]\n")
    out = CliRunner().invoke(config, ["check", str(bad)])
    assert out.exit_code == 2
    assert f"{bad}:3: child: 'nope' is not a child of 'orders-split'" in out.output
