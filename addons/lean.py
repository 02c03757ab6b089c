"""Lean dispatch: mitmproxy's built-in addons that are inert under the current options leave the
event chain.

mitmdump runs 36 addons, and mitmproxy walks all of them for every event of every flow (each lifecycle
event is followed by an `update` event): a generator per addon, a name lookup, a context manager.
That walk was about half of bare mitmdump's CPU per request (py-spy, docs/benchmarks.md), and most
of the addons it visits do nothing unless an option asks them to (`modify_headers`, `map_local`,
`save_stream_file`, `flow_detail` …). Once the gateway is running, the addons that are inert under
the options in force are taken out of `master.addons.chain`; they stay registered (their commands
and `master.addons.get` still work) and keep receiving every `configure`, so an option change that
brings one to life puts it back at its place in the chain, configured as mitmproxy would have.

Only addons whose every hook is a no-op under the listed condition are candidates, and only those
whose `done` is a no-op then too (they do not receive mitmproxy's `done`; the chain is restored at the
gateway's own `done`). `--set shadow_prune_addons=false` keeps mitmproxy's chain as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mitmproxy import hooks
from mitmproxy.proxy import mode_specs

logger = logging.getLogger(__name__)

OPTION = "shadow_prune_addons"

Option = Callable[[str], Any]  # an option's current value by name


def _http_only(option: Option) -> bool:
    """No proxy mode can carry DNS (strip_dns_https_records only acts on DNS responses)."""
    for spec in option("mode") or ():
        mode = mode_specs.ProxyMode.parse(spec)
        if isinstance(mode, mode_specs.ReverseMode):
            if mode.scheme == "dns":
                return False
        elif not isinstance(mode, (mode_specs.RegularMode, mode_specs.UpstreamMode, mode_specs.Socks5Mode,
                                   mode_specs.TransparentMode)):
            return False
    return True


def _onboarding_unreachable(option: Option) -> bool:
    """The onboarding app answers requests to `onboarding_host`; in reverse mode every request goes to
    the reverse target, so it is reachable only if that target is the onboarding host."""
    if not option("onboarding"):
        return True
    host = option("onboarding_host")
    for spec in option("mode") or ():
        mode = mode_specs.ProxyMode.parse(spec)
        if not isinstance(mode, mode_specs.ReverseMode) or mode.address[0] == host:
            return False
    return True


def _always(_option: Option) -> bool:
    return True


def _unset(*names: str) -> Callable[[Option], bool]:
    def inert(option: Option) -> bool:
        return not any(option(name) for name in names)
    return inert


# mitmproxy addon name → when it is inert. Addons not listed are never pruned (core, termlog, block,
# disableh2c, proxyserver, scriptloader, nextlayer, tlsconfig, updatealtsvc, dnsresolver: they act on
# every connection or request; browser, clientplayback, serverplayback, commandhistory: commands can
# bring them to life without an option change, or their `done` has work to do).
INERT_WHEN: dict[str, Callable[[Option], bool]] = {
    "anticache": _unset("anticache"),
    "anticomp": _unset("anticomp"),
    "blocklist": _unset("block_list"),
    "comment": _always,  # commands only
    "cut": _always,
    "export": _always,
    "dumper": lambda option: option("flow_detail") == 0,  # every dumper hook returns at flow_detail 0
    "errorcheck": _always,  # a log handler checked at startup; no hooks
    "keepserving": _always,  # `running` only (delivered before pruning)
    "readfile": _always,
    "readfilestdin": _always,
    "maplocal": _unset("map_local"),
    "mapremote": _unset("map_remote"),
    "modifybody": _unset("modify_body"),
    "modifyheaders": _unset("modify_headers"),
    "onboarding": _onboarding_unreachable,
    "proxyauth": _unset("proxyauth"),
    "save": _unset("save_stream_file"),
    "savehar": _unset("hardump"),
    "stickyauth": _unset("stickyauth"),
    "stickycookie": _unset("stickycookie"),
    "stripdnshttpsrecords": _http_only,
    "upstreamauth": _unset("upstream_auth"),
}


def addon_name(addon: object) -> str:
    """mitmproxy's name for an addon (AddonManager's lookup key)."""
    name = getattr(addon, "name", None)
    return name if isinstance(name, str) else type(addon).__name__.lower()


def inert(addon: object, option: Option) -> bool:
    condition = INERT_WHEN.get(addon_name(addon))
    return condition is not None and condition(option)


def restore(chain: Sequence[object], original: Sequence[object], returning: Iterable[object]) -> list[object]:
    """`chain` with `returning` put back where they stood in `original` (before the first addon that
    followed them there and is still in the chain); addons added since pruning keep their place."""
    result = list(chain)
    back = set(map(id, returning))
    for addon in (a for a in original if id(a) in back):
        after = original[original.index(addon) + 1:]
        position = next((result.index(a) for a in after if a in result), len(result))
        result.insert(position, addon)
    return result


class LeanDispatch:
    """Prunes mitmproxy's inert built-in addons from the event chain once running (see module doc)."""

    def __init__(self) -> None:
        self.master: Any = None
        self.is_running = False
        self.original: list[object] = []  # the chain when last pruned, in mitmproxy's order
        self.pruned: list[object] = []

    def load(self, loader: Any) -> None:
        self.master = loader.master
        loader.add_option(OPTION, bool, True,
                          "Take mitmproxy's built-in addons that are inert under the current options "
                          "(modify_headers, map_local, save_stream_file, flow_detail 0, …) out of event "
                          "dispatch once running; an option that brings one to life puts it back.")

    def _option(self, name: str) -> Any:
        return getattr(self.master.options, name, None)

    def running(self) -> None:
        self.is_running = True
        if self.master is not None and self._option(OPTION):
            self._prune()

    def _prune(self) -> None:
        addons = self.master.addons
        # mitmproxy iterates the list object it started with: addons after this one in the old chain
        # still receive the event being dispatched (`running` at start-up).
        self.original = list(addons.chain)
        self.pruned = [a for a in self.original if inert(a, self._option)]
        addons.chain = [a for a in self.original if a not in self.pruned]
        if self.pruned:
            logger.info(f"mitmproxy addons inert under the current options, out of event dispatch "
                        f"({OPTION}): {', '.join(addon_name(a) for a in self.pruned)}")

    def configure(self, updated: set[str]) -> None:
        if self.master is None:
            return
        if not self.pruned:
            if OPTION in updated and self._option(OPTION) and self.is_running:
                self._prune()
            return
        # The pruned addons are not in the chain mitmproxy is walking: deliver the change ourselves.
        # Not isolated: an OptionsError (an invalid modify_headers spec …) must reach mitmproxy.
        for addon in self.pruned:
            self.master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(updated))
        keep_pruning = self._option(OPTION)
        returning = [a for a in self.pruned if not keep_pruning or not inert(a, self._option)]
        if returning:
            self._restore(returning)
            logger.info(f"mitmproxy addons back in event dispatch: {', '.join(addon_name(a) for a in returning)}")

    def _restore(self, returning: Sequence[object]) -> None:
        manager = self.master.addons
        manager.chain = restore(manager.chain, self.original, returning)
        self.pruned = [a for a in self.pruned if a not in returning]

    def done(self) -> None:
        # A script reload runs `done` then loads the gateway afresh: hand mitmproxy its whole chain back.
        self.is_running = False
        if self.master is not None and self.pruned:
            self._restore(self.pruned)
