"""`shadow canary PLAN`: step a weighted service's candidate through traffic shares, judged by the verdict.

The plan (YAML; paths relative to the plan file)::

    gateway: gateway.yaml        # the gateway's config file: its weights are rewritten (temp + rename)
    service: checkout            # a `weighted` service of that file
    child: orders-next           # the child to shift (listed in shadow.split.candidates)
    steps: [5, 25, 50, 100]      # percent of the service's traffic for the child, in order
    minRequests: 200             # per arm, since the step began, before a look judges anything
    maxWait: 10m                 # per step: still undecided by then → back to the last proven step, exit 3
    pollInterval: 5s
    capture: ./capture           # default: the gateway's shadow.capture.dir
    policy: policy.yaml          # a policy file, or the policy inline; sequential mode is forced

At each step the weights are written (the child gets the step's percent, the other children share
the rest in proportion to their weights at the start), the gateway hot-reloads, and every poll
looks at the split rows captured since the step began: once both arms have `minRequests` rows the
verdict judges them in its sequential (anytime-valid) mode, with one SequentialState per step.
PASS promotes to the next step (the last one: promoted, exit 0; a step of 100 % is written without a
look, since nothing is left to compare against); FAIL writes weight 0 for the child
(rolled back, exit 1); anything else keeps waiting until maxWait (then exit 3, with the weights
set back to the last step a PASS proved, 0 % if none). Every decision goes, with its evidence, to CAPTURE/canary.jsonl and as one line
to the terminal. Exit 2: a bad plan or gateway file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from shadow.capture.atomic import replace_text
from shadow.errors import ConfigError

EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3
LOG_NAME = "canary.jsonl"


@dataclass(frozen=True)
class CanaryPlan:
    gateway: Path
    service: str
    child: str
    steps: tuple[int, ...]
    min_requests: int
    max_wait_s: float
    poll_s: float
    capture: Path
    policy: Any  # analyzers.policy.Policy, sequential
    source: str


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------

def is_canary_plan(path: Path) -> bool:
    """A YAML mapping with `steps` and `child` and no `http:` section: a plan, not a gateway file."""
    from shadow.yamlconfig import load_yaml, read_yaml_file

    if not path.is_file():
        return False
    try:
        data = load_yaml(read_yaml_file(path), str(path))
    except ConfigError:
        return False
    return isinstance(data, Mapping) and "steps" in data and "child" in data and "http" not in data


def describe_plan(plan: CanaryPlan) -> str:
    steps = " → ".join(f"{s} %" for s in plan.steps)
    return (f"canary plan: {plan.child} of {plan.service} through {steps} (gateway {plan.gateway}, "
            f"capture {plan.capture}, ≥ {plan.min_requests} requests per arm per step, at most "
            f"{plan.max_wait_s:g} s per step)")


def load_plan(path: Path) -> CanaryPlan:
    from analyzers.policy import Policy, load_policy
    from shadow.gateway.config import WeightedService, load_config
    from shadow.yamlconfig import load_yaml, parse_duration, read_yaml_file

    source = str(path)
    data = load_yaml(read_yaml_file(path), source)  # bounded like every config: size, depth, aliases
    if not isinstance(data, Mapping):
        raise ConfigError("a canary plan is a mapping (gateway, service, child, steps, ...)", file=source)

    def line(key: str) -> int | None:
        try:
            return int(data.lc.value(key)[0]) + 1  # type: ignore[attr-defined]
        except (AttributeError, KeyError, TypeError):
            return None

    def fail(message: str, key: str) -> ConfigError:
        return ConfigError(message, file=source, line=line(key), field=key)

    allowed = {"gateway", "service", "child", "steps", "minRequests", "maxWait", "pollInterval", "capture",
               "policy"}
    for key in data:
        if key not in allowed:
            raise fail(f"unknown key (expected one of {', '.join(sorted(allowed))})", str(key))
    for key in ("gateway", "service", "child", "steps"):
        if data.get(key) in (None, ""):
            raise ConfigError("required", file=source, field=key)
    base = path.parent
    gateway = base / str(data["gateway"])
    config = load_config(gateway)  # a ConfigError names the gateway file
    service, child = str(data["service"]), str(data["child"])
    svc = config.services.get(service)
    if not isinstance(svc, WeightedService) or svc.hrw:
        raise fail(f"{service!r} is not a weighted service of {gateway}", "service")
    if child not in {c.name for c in svc.services}:
        raise fail(f"{child!r} is not a child of {service!r} (children: "
                   f"{', '.join(c.name for c in svc.services)})", "child")
    if child not in config.shadow.split.candidates:
        raise fail(f"{child!r} must be listed in {gateway}'s shadow.split.candidates, so its rows are "
                   "captured as the candidate arm", "child")
    steps = data["steps"]
    if (not isinstance(steps, list) or not steps
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100 for s in steps)
            or list(steps) != sorted(set(steps))):
        raise fail("steps must be increasing integer percents in 1..100, e.g. [5, 25, 50, 100]", "steps")

    def positive_int(key: str, default: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(f"must be a positive integer, got {value!r}", key)
        return int(value)

    def duration(key: str, default: str) -> float:
        try:
            value = parse_duration(data.get(key, default))
        except ValueError as exc:
            raise fail(str(exc), key) from None
        if value <= 0:
            raise fail("must be positive", key)
        return value

    policy_node = data.get("policy")
    if policy_node is None:
        policy = Policy(sequential=True, source=source)
    elif isinstance(policy_node, str):
        policy = load_policy(base / policy_node)
    elif isinstance(policy_node, Mapping):
        policy = Policy.from_mapping(_plain(policy_node), source=f"{source} (policy)")
    else:
        raise fail("policy is a file name or a mapping", "policy")
    policy = dataclasses.replace(policy, sequential=True)  # polled repeatedly: anytime-valid only
    capture = base / str(data["capture"]) if data.get("capture") else config.shadow.capture.dir
    return CanaryPlan(gateway=gateway, service=service, child=child, steps=tuple(int(s) for s in steps),
                      min_requests=positive_int("minRequests", 200), max_wait_s=duration("maxWait", "10m"),
                      poll_s=duration("pollInterval", "5s"), capture=capture, policy=policy, source=source)


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------

def split_weights(original: Mapping[str, int], child: str, percent: int) -> dict[str, int]:
    """The child gets `percent`; the others share 100 - percent in proportion to their original
    weights (largest remainders, so the total is exactly 100)."""
    others = {n: max(w, 0) for n, w in original.items() if n != child}
    rest = 100 - percent
    total = sum(others.values()) or len(others)
    raw = {n: rest * ((w if sum(others.values()) else 1) / total) for n, w in others.items()}
    out = {n: math.floor(v) for n, v in raw.items()}
    for n in sorted(raw, key=lambda n: raw[n] - out[n], reverse=True)[:rest - sum(out.values())]:
        out[n] += 1
    out[child] = percent
    return out


def _ci_get(node: Mapping[Any, Any], key: str) -> Any:
    for k in node:
        if isinstance(k, str) and k.lower() == key.lower():
            return node[k]
    return None


def write_weights(gateway: Path, service: str, weights: Mapping[str, int]) -> None:
    """Rewrite the weights of `service`'s children in place, atomically (a temporary file in the same
    folder, fsync, rename). Only the weight numbers change: every other character of the file (comments,
    quoting, flow style) stays as the user wrote it. A child without a `weight:` key gets one through a
    round-trip dump (ruamel keeps comments then, but may restyle flow collections)."""
    import re

    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    text = gateway.read_text(encoding="utf-8")
    root = yaml.load(text)
    services = _ci_get(_ci_get(root, "http"), "services")
    children = _ci_get(_ci_get(services[service], "weighted"), "services")
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # line, column, length of the old number, new text
    restyle = False
    for item in children:
        name = str(item["name"]).split("@", 1)[0]
        if name not in weights:
            continue
        key = next((k for k in item if isinstance(k, str) and k.lower() == "weight"), None)
        position = item.lc.value(key) if key is not None else None
        number = re.match(r"-?\d+", lines[position[0]][position[1]:]) if position is not None else None
        if key is None or position is None or number is None:
            item[key or "weight"] = int(weights[name])
            restyle = True
            continue
        edits.append((position[0], position[1], number.end(), str(int(weights[name]))))
    if restyle:
        replace_text(gateway, lambda out: yaml.dump(root, out))
        return
    for line, column, length, new in sorted(edits, reverse=True):
        lines[line] = lines[line][:column] + new + lines[line][column + length:]
    replace_text(gateway, lambda out: out.write("".join(lines)))


# --------------------------------------------------------------------------------------------------
# Looking at a step's traffic
# --------------------------------------------------------------------------------------------------

@dataclass
class Look:
    n_primary: int
    n_candidate: int
    verdict: Any = None  # analyzers.verdict.Verdict when judged


def look(plan: CanaryPlan, children: tuple[str, ...], since_ns: int, state: Any) -> Look:
    """Split rows of the service's children captured since `since_ns`; judged once both arms have
    `min_requests` rows."""
    from analyzers.pipeline import split_samples
    from analyzers.verdict import judge
    from shadow.capture.store import open_store
    from shadow.errors import CaptureError

    try:
        store = open_store(plan.capture)
    except CaptureError:
        return Look(0, 0)  # nothing sealed yet
    with store:
        names = ", ".join("'" + c.replace("'", "''") + "'" for c in children)
        store.con.execute("ALTER VIEW exchanges RENAME TO exchanges_all")
        store.con.execute(
            "CREATE VIEW exchanges AS SELECT * FROM exchanges_all WHERE mode = 'split' "
            f"AND service IN ({names}) AND ts >= make_timestamp({since_ns // 1000})")
        counts = dict(store.sql("SELECT role, count(*) FROM exchanges GROUP BY role").fetchall())
        result = Look(int(counts.get("primary", 0)), int(counts.get("candidate", 0)))
        if min(result.n_primary, result.n_candidate) >= plan.min_requests:
            result.verdict = judge(split_samples(store), plan.policy, sequential_state=state)
    return result


# --------------------------------------------------------------------------------------------------
# The controller
# --------------------------------------------------------------------------------------------------

class DecisionLog:
    def __init__(self, path: Path, echo: Callable[[str], None]) -> None:
        self.path = path
        self.echo = echo
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: str, line: str, **evidence: Any) -> None:
        record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **evidence}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")
        self.echo(f"canary: {line}")


def _evidence(v: Any) -> dict[str, Any]:
    from analyzers.report import class_name, verdict_results

    not_pass = [{"endpoint": r.endpoint, "metric": r.metric, "class": class_name(r.cls), "reason": r.reason,
                 "estimate": r.estimate, "n_primary": r.n_primary, "n_candidate": r.n_candidate}
                for r in verdict_results(v) if class_name(r.cls) != "PASS"]
    return {"overall": v.overall, "score": round(float(v.score), 1), "reason": v.reason, "looks": v.looks,
            "guardrails_not_pass": not_pass}


def run_canary(plan: CanaryPlan, *, echo: Callable[[str], None] = click.echo,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    from analyzers.sequential import SequentialState
    from shadow.gateway.config import WeightedService, load_config

    config = load_config(plan.gateway)
    svc = config.services[plan.service]
    assert isinstance(svc, WeightedService)
    original = {c.name: c.weight for c in svc.services}
    children = tuple(original)
    log = DecisionLog(plan.capture / LOG_NAME, echo)
    log("start", f"{plan.service}: shifting {plan.child} through {' → '.join(map(str, plan.steps))} %",
        plan=plan.source, gateway=str(plan.gateway), service=plan.service, child=plan.child,
        steps=list(plan.steps), min_requests=plan.min_requests, original_weights=original)
    reached = 0
    for step in plan.steps:
        weights = split_weights(original, plan.child, step)
        write_weights(plan.gateway, plan.service, weights)
        since_ns = time.time_ns()
        started = clock()
        state = SequentialState()
        if step == 100:
            # All traffic on the child: nothing left to compare against. Reaching 100 % is the
            # promotion that the previous steps' PASS verdicts earned.
            reached = step
            log("promote", f"step 100 %: weights {weights}; the child serves all traffic", step=step,
                weights=weights)
            break
        log("step", f"step {step} %: weights {weights}", step=step, weights=weights)
        shown: tuple[int, int] | None = None
        while True:
            sleep(plan.poll_s)
            result = look(plan, children, since_ns, state)
            elapsed = clock() - started
            if result.verdict is None and (result.n_primary, result.n_candidate) != shown:
                shown = (result.n_primary, result.n_candidate)
                echo(f"canary: {progress_line(plan, step, result, elapsed)}")  # the terminal only, not the log
            if result.verdict is None:
                if elapsed >= plan.max_wait_s:
                    log("inconclusive", f"step {step} %: only {result.n_primary} primary / {result.n_candidate} "
                        f"candidate requests after {elapsed:.0f} s (need {plan.min_requests} each); paused at "
                        f"{reached} %", step=step, n_primary=result.n_primary, n_candidate=result.n_candidate,
                        paused_at=reached)
                    return _pause(log, plan, original, reached)
                continue
            v = result.verdict
            evidence = _evidence(v)
            if v.overall == "PASS":
                reached = step
                log("promote", f"step {step} %: PASS ({result.n_primary} primary / {result.n_candidate} "
                    f"candidate, look {v.looks}): promoted", step=step, n_primary=result.n_primary,
                    n_candidate=result.n_candidate, **evidence)
                break
            if v.overall == "FAIL":
                back = split_weights(original, plan.child, 0)
                write_weights(plan.gateway, plan.service, back)
                log("rollback", f"step {step} %: FAIL — {v.reason}; rolled back, weights {back}", step=step,
                    n_primary=result.n_primary, n_candidate=result.n_candidate, weights=back, **evidence)
                _summary(log, "FAIL", 0, plan)
                return EXIT_ROLLED_BACK
            if elapsed >= plan.max_wait_s:
                log("inconclusive", f"step {step} %: still {v.overall} after {elapsed:.0f} s — {v.reason}; "
                    f"paused at {reached} %", step=step, n_primary=result.n_primary,
                    n_candidate=result.n_candidate, paused_at=reached, **evidence)
                return _pause(log, plan, original, reached)
            log("wait", f"step {step} %: {v.overall} at look {v.looks} ({result.n_primary} / "
                f"{result.n_candidate}); waiting", step=step, n_primary=result.n_primary,
                n_candidate=result.n_candidate, **evidence)
    _summary(log, "PASS", reached, plan)
    return EXIT_PROMOTED


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(plan: CanaryPlan, step: int, result: Look, elapsed: float) -> str:
    """What a waiting step has so far: its share, n per arm against minRequests, the time left."""
    return (f"step {step} %: {result.n_primary:,} primary / {result.n_candidate:,} candidate requests of "
            f"{plan.min_requests:,} each before the first look; {_clock_text(plan.max_wait_s - elapsed)} left "
            f"of maxWait")


def dry_run_lines(plan: CanaryPlan) -> list[str]:
    """What `shadow canary --dry-run` prints: the plan and the weights each step would write."""
    from shadow.gateway.config import WeightedService, load_config

    svc = load_config(plan.gateway).services[plan.service]
    assert isinstance(svc, WeightedService)
    original = {c.name: c.weight for c in svc.services}
    lines = [describe_plan(plan), f"weights now: {original}"]
    lines += [f"step {step} %: would write {split_weights(original, plan.child, step)}" for step in plan.steps]
    lines.append(f"on FAIL: would write {split_weights(original, plan.child, 0)}; nothing was written (--dry-run)")
    return lines


def _pause(log: DecisionLog, plan: CanaryPlan, original: Mapping[str, int], reached: int) -> int:
    """Undecided at maxWait: back to the last share a PASS proved (0 if none), and stop."""
    weights = split_weights(original, plan.child, reached)
    write_weights(plan.gateway, plan.service, weights)
    log("pause", f"weights back to the last proven step ({reached} %): {weights}", paused_at=reached,
        weights=weights)
    _summary(log, "INCONCLUSIVE", reached, plan)
    return EXIT_INCONCLUSIVE


def _summary(log: DecisionLog, outcome: str, reached: int, plan: CanaryPlan) -> None:
    words = {"PASS": f"promoted: {plan.child} serves {reached} % of {plan.service}",
             "FAIL": f"rolled back: {plan.child} serves 0 % of {plan.service}",
             "INCONCLUSIVE": f"inconclusive: paused with {plan.child} at {reached} % of {plan.service} (the last proven step)"}[outcome]
    log("summary", words, outcome=outcome, reached=reached)
