"""Debug checks off (addons/debugchecks.py): mitmproxy's debug-only type checks of message data are
skipped while the gateway runs, come back when the option asks or at `done`. A real mitmproxy
addon context; one real mitmdump gateway at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from addons.debugchecks import OPTION, DebugChecksOff
from tests.conftest import PASS_THROUGH_CONFIG, GatewayProcess
from tests.upstream import Upstream


def _badly_typed_response() -> http.Response:
    """A response whose timestamp_end is a string: mitmproxy's debug check rejects it when on."""
    return http.Response(b"HTTP/1.1", 200, b"OK", http.Headers(), b"", None, 1.0, "late")  # type: ignore[arg-type]


def _checks_on() -> bool:
    try:
        _badly_typed_response()
    except TypeError:
        return True
    return False


@pytest.fixture
def checks() -> Iterator[tuple[taddons.context, DebugChecksOff]]:
    addon = DebugChecksOff()
    with taddons.context(addon, loadcore=False) as tctx:
        try:
            yield tctx, addon
        finally:
            addon.done()  # never leave mitmproxy's class patched for the other tests
    assert _checks_on()


def test_checks_are_on_until_running_then_off(checks: tuple[taddons.context, DebugChecksOff]) -> None:
    _tctx, addon = checks
    assert _checks_on()  # loaded, not running yet
    addon.running()
    assert not _checks_on()
    # Well-typed messages are built as before.
    response = http.Response.make(200, b"body", {"X-A": "1"})
    assert response.content == b"body" and response.headers["X-A"] == "1"


def test_the_option_turns_them_back_on_and_off_at_runtime(checks: tuple[taddons.context, DebugChecksOff]) -> None:
    tctx, addon = checks
    addon.running()
    tctx.options.update(**{OPTION: False})
    assert _checks_on()
    tctx.options.update(**{OPTION: True})
    assert not _checks_on()


def test_off_at_start_skips_nothing(checks: tuple[taddons.context, DebugChecksOff]) -> None:
    tctx, addon = checks
    tctx.options.update(**{OPTION: False})
    addon.running()
    assert _checks_on()


def test_done_restores_mitmproxys_check(checks: tuple[taddons.context, DebugChecksOff]) -> None:
    _tctx, addon = checks
    original = vars(http.MessageData)["__post_init__"]
    addon.running()
    addon.running()  # a second `running` (script reload) does not save the no-op as the original
    addon.done()
    assert vars(http.MessageData)["__post_init__"] is original and _checks_on()




@pytest.mark.parametrize("skip", [True, False])
def test_a_gateway_skips_the_checks_unless_told_not_to(tmp_path: Path, skip: bool) -> None:
    mono = Upstream("mono").start()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(PASS_THROUGH_CONFIG.format(mono=mono.url))
    gw = GatewayProcess(cfg, extra_args=("--set", f"{OPTION}={str(skip).lower()}")).start()
    try:
        with httpx.Client(base_url=gw.url, timeout=30.0) as client:
            answers = [client.post(f"/items/{i}", content=b"x" * i).status_code for i in range(3)]
        assert answers == [200, 200, 200] and len(mono.received()) == 3
        assert gw.wait_for_output("out of event dispatch")  # running: both concerns have acted
        assert ("debug-only message type checks skipped" in gw.output()) is skip
    finally:
        gw.close()
        mono.stop()
