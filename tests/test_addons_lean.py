"""Lean dispatch (addons/lean.py): mitmproxy's inert built-in addons leave the event chain once
running and come back when an option brings them to life. A real mitmproxy addon manager with
mitmdump's own addons; one real mitmdump gateway at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mitmproxy import exceptions
from mitmproxy.addons import default_addons, dumper, errorcheck, keepserving, readfile
from mitmproxy.proxy.layers.http import HttpRequestHeadersHook
from mitmproxy.test import taddons, tflow

from addons.lean import INERT_WHEN, OPTION, LeanDispatch, addon_name, inert, restore
from tests.conftest import PASS_THROUGH_CONFIG, GatewayProcess
from tests.upstream import Upstream

REVERSE = ["reverse:http://127.0.0.1:8080"]


def _options(**values: object) -> dict[str, object]:
    defaults: dict[str, object] = {
        "mode": REVERSE, "onboarding": True, "onboarding_host": "mitm.it", "flow_detail": 0,
        "modify_headers": [], "map_local": [], "save_stream_file": None, "proxyauth": None,
    }
    return defaults | values


def test_option_driven_addons_are_inert_only_at_their_defaults() -> None:
    class ModifyHeaders:
        pass

    addon = ModifyHeaders()
    assert inert(addon, _options().get)
    assert not inert(addon, _options(modify_headers=["/~q/X-A/1"]).get)


def test_unlisted_addons_are_never_inert() -> None:
    class Proxyserver:
        pass

    class Core:
        pass

    assert not inert(Proxyserver(), _options().get)
    assert not inert(Core(), _options().get)
    assert "proxyserver" not in INERT_WHEN and "core" not in INERT_WHEN and "termlog" not in INERT_WHEN


def test_dumper_is_inert_only_without_flow_output() -> None:
    d = dumper.Dumper()
    assert inert(d, _options(flow_detail=0).get)
    assert not inert(d, _options(flow_detail=1).get)


@pytest.mark.parametrize(("mode", "expected"), [
    (REVERSE, True),
    (["regular"], False),  # mitm.it is the onboarding app of a regular proxy
    (["reverse:http://mitm.it:80"], False),
])
def test_onboarding_is_inert_when_its_host_cannot_be_reached(mode: list[str], expected: bool) -> None:
    class Onboarding:
        pass

    assert inert(Onboarding(), _options(mode=mode).get) is expected
    assert inert(Onboarding(), _options(mode=["regular"], onboarding=False).get)


@pytest.mark.parametrize(("mode", "expected"), [
    (REVERSE, True), (["regular", "socks5"], True), (["reverse:dns://1.1.1.1"], False), (["dns"], False),
])
def test_dns_record_stripping_is_inert_without_a_dns_capable_mode(mode: list[str], expected: bool) -> None:
    class StripDnsHttpsRecords:
        pass

    assert inert(StripDnsHttpsRecords(), _options(mode=mode).get) is expected


def test_restore_puts_addons_back_in_their_original_place() -> None:
    a, b, c, d, late = "a", "b", "c", "d", "late"
    original = [a, b, c, d]
    assert restore([a, d], original, [c]) == [a, c, d]
    assert restore([a, d], original, [b, c]) == [a, b, c, d]
    assert restore([b, c], original, [d]) == [b, c, d]
    assert restore([b, late], original, [a]) == [a, b, late]  # an addon added since keeps its place


# -- against a real addon manager -------------------------------------------------------------------

def _mitmdump_addons() -> list[object]:
    """mitmdump's chain (mitmproxy.tools.dump.DumpMaster) without the terminal log."""
    return [*default_addons(), dumper.Dumper(), keepserving.KeepServing(), readfile.ReadFileStdin(),
            errorcheck.ErrorCheck()]


@pytest.fixture
def lean() -> Iterator[tuple[taddons.context, LeanDispatch]]:
    lean = LeanDispatch()
    addons = _mitmdump_addons()
    with taddons.context(*addons, lean, loadcore=False) as tctx:
        tctx.options.update(mode=REVERSE, flow_detail=0)
        try:
            yield tctx, lean
        finally:
            for addon in addons:
                if isinstance(addon, errorcheck.ErrorCheck):
                    addon.finish()


def _names(tctx: taddons.context) -> list[str]:
    return [addon_name(a) for a in tctx.master.addons.chain]


def test_running_prunes_the_inert_addons_and_keeps_the_rest(lean: tuple[taddons.context, LeanDispatch]) -> None:
    tctx, addon = lean
    before = _names(tctx)
    addon.running()
    after = _names(tctx)
    assert {"modifyheaders", "maplocal", "save", "dumper", "anticache", "keepserving"} <= set(before) - set(after)
    assert {"core", "proxyserver", "nextlayer", "tlsconfig", "block", "disableh2c", "updatealtsvc",
            "clientplayback", "serverplayback", "leandispatch"} <= set(after)
    assert after == [n for n in before if n in after]  # order kept
    assert len(after) < len(before) / 2
    # Still registered: lookups and commands keep working.
    assert tctx.master.addons.get("modifyheaders") is not None


def test_the_table_names_real_addons_and_real_options(lean: tuple[taddons.context, LeanDispatch]) -> None:
    """A mitmproxy upgrade that renames an addon or an option fails here, not silently in production."""
    tctx, _addon = lean
    names = {addon_name(a) for a in tctx.master.addons.chain}
    assert set(INERT_WHEN) - {"readfile"} <= names  # readfile: mitmweb's ReadFile (mitmdump: readfilestdin)

    def strict(name: str) -> object:
        return getattr(tctx.options, name)  # AttributeError for an option mitmproxy does not have

    for condition in INERT_WHEN.values():
        condition(strict)


def test_pruned_addons_get_no_flow_events(lean: tuple[taddons.context, LeanDispatch]) -> None:
    tctx, addon = lean
    seen: list[str] = []
    modify = tctx.master.addons.get("modifyheaders")
    modify.requestheaders = lambda flow: seen.append("requestheaders")  # instance attribute: found by lookup
    flow = tflow.tflow()
    asyncio.run(tctx.master.addons.handle_lifecycle(HttpRequestHeadersHook(flow)))
    assert seen == ["requestheaders"]
    addon.running()
    asyncio.run(tctx.master.addons.handle_lifecycle(HttpRequestHeadersHook(flow)))
    assert seen == ["requestheaders"]


def test_an_option_that_brings_an_addon_to_life_puts_it_back_configured(
        lean: tuple[taddons.context, LeanDispatch]) -> None:
    tctx, addon = lean
    original = _names(tctx)
    addon.running()
    tctx.options.update(modify_headers=["/~q/X-Added/yes"])
    assert "modifyheaders" in _names(tctx)
    assert _names(tctx) == [n for n in original if n in _names(tctx)]
    flow = tflow.tflow()
    asyncio.run(tctx.master.addons.handle_lifecycle(HttpRequestHeadersHook(flow)))
    assert flow.request.headers["X-Added"] == "yes"  # it saw the configure it missed while pruned
    assert "maplocal" not in _names(tctx)  # the others stay out


def test_an_invalid_option_for_a_pruned_addon_is_rejected(lean: tuple[taddons.context, LeanDispatch]) -> None:
    tctx, addon = lean
    addon.running()
    pruned = _names(tctx)
    with pytest.raises(exceptions.OptionsError):
        tctx.options.update(modify_headers=["not a spec"])
    assert _names(tctx) == pruned
    assert tctx.options.modify_headers == []  # mitmproxy rolled the option back


def test_the_option_turns_pruning_off_and_on_at_runtime(lean: tuple[taddons.context, LeanDispatch]) -> None:
    tctx, addon = lean
    full = _names(tctx)
    addon.running()
    pruned = _names(tctx)
    tctx.options.update(**{OPTION: False})
    assert _names(tctx) == full
    tctx.options.update(**{OPTION: True})
    assert _names(tctx) == pruned


def test_off_at_start_prunes_nothing(lean: tuple[taddons.context, LeanDispatch]) -> None:
    tctx, addon = lean
    tctx.options.update(**{OPTION: False})
    full = _names(tctx)
    addon.running()
    assert _names(tctx) == full


def test_done_hands_the_whole_chain_back(lean: tuple[taddons.context, LeanDispatch]) -> None:
    tctx, addon = lean
    full = _names(tctx)
    addon.running()
    addon.done()
    assert _names(tctx) == full


# -- a real gateway -----------------------------------------------------------------------------------



def test_a_gateway_prunes_and_a_live_builtin_addon_still_works(tmp_path: Path) -> None:
    mono = Upstream("mono").start()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(PASS_THROUGH_CONFIG.format(mono=mono.url))
    gw = GatewayProcess(cfg, extra_args=("--set", "modify_headers=/~q/X-Added/yes")).start()
    try:
        with httpx.Client(base_url=gw.url, timeout=30.0) as client:
            assert client.get("/lean").status_code == 200
        assert gw.wait_for_output("out of event dispatch")
        line = next(x for x in gw.output().splitlines() if "out of event dispatch" in x)
        assert "dumper" in line and "maplocal" in line
        assert "modifyheaders" not in line  # set on the command line: live, kept
        assert [r.headers.get("x-added") for r in mono.received() if r.path == "/lean"] == ["yes"]
    finally:
        gw.close()
        mono.stop()
