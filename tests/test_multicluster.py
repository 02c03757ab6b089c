"""The multi-cluster core without processes: the hub: section (file/line errors), the advertisement
document, and the services a parent derives from its children's advertisements."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from shadow.errors import ConfigError
from shadow.gateway.config import LoadBalancerService, parse_config
from shadow.gateway.routing import config_for_listener
from shadow.multicluster.advertisement import AdvertisedUplink, advertisement, parse_advertisement
from shadow.multicluster.services import ChildState, current_uplinks, uplink_services
from shadow.multicluster.settings import Uplink, UplinkHealthCheck

CHILD = """
hub:
  uplinkEntryPoints:
    bridge: {address: "127.0.0.1:9443", tls: {options: bridge}}
  uplinks:
    orders: {service: app, weight: 30, healthCheck: {path: /health, interval: 2s}}
tls:
  certificates: [{certFile: c.crt, keyFile: c.key}]
  options:
    bridge: {clientAuth: {caFiles: [ca.pem]}}
http:
  routers:
    local: {rule: "PathPrefix(`/`)", service: app}
  services:
    app: {loadBalancer: {servers: [{url: "http://127.0.0.1:9001"}]}}
"""

PARENT = """
hub:
  multiCluster:
    pollInterval: 2s
    tls: {caFile: ca.pem, certFile: c.crt, keyFile: c.key}
    children:
      vm: {address: "https://127.0.0.1:9443"}
      k8s: {address: "https://10.0.0.2:9443"}
http:
  routers:
    orders: {rule: "PathPrefix(`/`)", service: orders@multicluster}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(tmp_path_factory.mktemp("hub"))
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(path / "ca.pem"))
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(path / "c.key"))
    cert.cert_chain_pems[0].write_to_path(str(path / "c.crt"))
    return path


def test_a_child_gets_an_uplink_entry_point_and_a_router_per_uplink(folder: Path) -> None:
    config = parse_config(CHILD, "child.yaml", base_dir=folder)
    ep = config.entry_points["bridge"]
    assert (ep.uplink, ep.tls, ep.tls_options, ep.port) == (True, True, "bridge", 9443)
    router = next(r for r in config.routers if r.name == "hub-uplink-orders")
    assert (router.service, router.entry_points, router.tls) == ("app", ("bridge",), True)
    # the uplink entry point serves the uplink's router only; the client router stays off it
    on_bridge = config_for_listener(config, ep, tls=True)
    assert [r.name for r in on_bridge.routers] == ["hub-uplink-orders"]
    assert config.hub.uplinks == (Uplink("orders", "app", 30, (), UplinkHealthCheck("/health", 2.0, 2.0)),)


def test_a_parent_serves_uplinks_named_before_any_child_answered_as_503(folder: Path) -> None:
    config = parse_config(PARENT, "parent.yaml", base_dir=folder)
    placeholder = config.services["orders@multicluster"]
    assert isinstance(placeholder, LoadBalancerService) and placeholder.servers == ()
    assert placeholder.empty_status == 503
    assert [c.name for c in config.hub.multi_cluster.children] == ["vm", "k8s"]  # type: ignore[union-attr]


def test_advertisement_round_trip_and_entry_point_filter() -> None:
    uplinks = (Uplink("orders", "app", 30, (), UplinkHealthCheck("/health", 2.0, 1.0)),
               Uplink("admin", "app", 1, ("other",)))
    doc = advertisement("vm", uplinks, "bridge")
    assert parse_advertisement(doc) == (AdvertisedUplink("orders", 30, UplinkHealthCheck("/health", 2.0, 1.0)),)


@pytest.mark.parametrize(("body", "reason"), [
    (b"<html>", "not JSON"),
    (b'{"kind": "Other", "version": 1}', "not an UplinkList document"),
    (b'{"kind": "UplinkList", "version": 2, "uplinks": []}', "version 2 is not supported"),
    (b'{"kind": "UplinkList", "version": 1, "uplinks": [{"name": "a b"}]}', "uplinks[0].name: not an uplink name"),
    (b'{"kind": "UplinkList", "version": 1, "uplinks": [{"name": "a", "weight": -1}]}', "uplinks[0].weight"),
    (b'{"kind": "UplinkList", "version": 1, "uplinks": [{"name": "a"}, {"name": "a"}]}', "advertised twice"),
])
def test_garbage_advertisements_are_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        parse_advertisement(body)
    assert reason in str(err.value)


def test_services_weight_children_by_their_uplink_weights(folder: Path) -> None:
    provider = parse_config(PARENT, "parent.yaml", base_dir=folder).hub.multi_cluster
    assert provider is not None
    hc = UplinkHealthCheck("/health", 1.0, 0.5)
    services = uplink_services(provider, {"vm": (AdvertisedUplink("orders", 70, hc),),
                                          "k8s": (AdvertisedUplink("orders", 30, hc), AdvertisedUplink("cart", 0))})
    orders = services["orders@multicluster"]
    assert isinstance(orders, LoadBalancerService)
    assert sorted((s.url, s.weight, s.preserve_path) for s in orders.servers) == [
        ("https://10.0.0.2:9443/.hub/uplink/orders", 30, True), ("https://127.0.0.1:9443/.hub/uplink/orders", 70, True)]
    assert all(s.transport == provider.transport for s in orders.servers)
    assert orders.health_check is not None and orders.health_check.interval_s == 1.0
    cart = services["cart@multicluster"]  # weight 0 everywhere: nothing serves it (503) ...
    assert isinstance(cart, LoadBalancerService) and cart.servers == ()
    assert "k8s/cart@multicluster" in services  # ... but the child's own service can still be mirrored to


def test_an_unreachable_child_keeps_its_uplinks_for_the_grace_period() -> None:
    up = (AdvertisedUplink("orders", 1),)
    state = ChildState("vm").polled(100.0, up)
    failed = state.polled(103.0, None, "connection refused")
    assert failed.uplinks == up and failed.error == "connection refused"
    assert current_uplinks([failed], 104.0, 5.0) == {"vm": up}
    assert current_uplinks([failed], 106.0, 5.0) == {}  # dropped after the grace period
    assert current_uplinks([ChildState("new")], 0.0, 5.0) == {}  # never answered: nothing


def test_a_reload_with_new_advertisements_builds_from_the_same_file(folder: Path) -> None:
    provider = parse_config(PARENT, "parent.yaml", base_dir=folder).hub.multi_cluster
    assert provider is not None
    generated = uplink_services(provider, {"vm": (AdvertisedUplink("orders", 5),)})
    config = parse_config(PARENT, "parent.yaml", base_dir=folder, generated=generated)
    orders = config.services["orders@multicluster"]
    assert isinstance(orders, LoadBalancerService) and [s.weight for s in orders.servers] == [5]


@pytest.mark.parametrize(("text", "where"), [
    (CHILD.replace("service: app, weight: 30", "service: nope, weight: 30"),
     ":6: hub.uplinks.orders.service: no service named 'nope'"),
    (CHILD.replace("bridge: {clientAuth: {caFiles: [ca.pem]}}", "bridge: {minVersion: VersionTLS12}"),
     ":4: hub.uplinkEntryPoints.bridge.tls.options: tls options 'bridge' must be defined in tls.options with clientAuth"),
    (CHILD.replace(", tls: {options: bridge}", ""), ":4: hub.uplinkEntryPoints.bridge: an uplink entry point requires tls"),
    (CHILD.replace("weight: 30", "weight: many"), ":6: hub.uplinks.orders.weight"),
    (PARENT.replace("https://10.0.0.2:9443", "http://10.0.0.2:9443"),
     ":8: hub.multiCluster.children.k8s.address: bad address 'http://10.0.0.2:9443': expected https://HOST:PORT"),
    (PARENT.replace("    tls: {caFile: ca.pem, certFile: c.crt, keyFile: c.key}\n", ""),
     ":4: hub.multiCluster: the parent needs tls"),
    (PARENT.replace("caFile: ca.pem", "caFile: missing.pem"), ":5: hub.multiCluster.tls.caFile: cannot read"),
    (PARENT.replace("pollInterval: 2s", "pollInterval: 0s"), ":4: hub.multiCluster.pollInterval: must be positive"),
    (PARENT.split("hub:")[0] + "http:" + PARENT.split("http:")[1],
     ":3: http: 'orders@multicluster' names the multi-cluster provider, which needs hub.multiCluster"),
])
def test_bad_hub_sections_name_file_line_and_field(folder: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "gw.yaml", base_dir=folder)
    assert str(err.value).startswith("gw.yaml" + where), str(err.value)


def test_the_documented_examples_load(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parent.parent / "docs" / "examples" / "multi-cluster"
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(certs / "ca.pem"))
    for name in ("vm", "k8s", "parent"):
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(str(certs / f"{name}.key"))
        cert.cert_chain_pems[0].write_to_path(str(certs / f"{name}.crt"))
    loaded = {f.name: parse_config(f.read_text(), str(tmp_path / f.name), base_dir=tmp_path)
              for f in sorted(examples.glob("*.yaml"))}
    assert set(loaded) == {"child-vm.yaml", "child-k8s.yaml", "parent.yaml"}
    assert [u.weight for u in loaded["child-vm.yaml"].hub.uplinks] == [100]
    assert [u.weight for u in loaded["child-k8s.yaml"].hub.uplinks] == [0]
    assert "k8s/orders@multicluster" in loaded["parent.yaml"].services
