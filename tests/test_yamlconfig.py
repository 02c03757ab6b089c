"""shadow.yamlconfig: the YAML reader every config shares, and its limits against config bombs
(issue #17: an anchors bomb, a 3,000-deep structure, an oversized file). Each attack runs through
the real `shadow config check` in a child process capped in memory and time, so a regression fails
the test instead of eating the machine."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import load_config, parse_config
from shadow.yamlconfig import (
    MAX_ALIAS_NODES,
    MAX_CONFIG_BYTES,
    MAX_NESTING,
    load_yaml,
    read_yaml_file,
)
from tests.conftest import REPO

VALID_HTTP = """\
http:
  routers:
    api: {rule: "PathPrefix(`/api`)", service: mono}
  services:
    mono: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
"""


def alias_bomb(levels: int = 9, fan_out: int = 9) -> str:
    """The billion laughs in YAML: each anchor a list of `fan_out` aliases of the previous one, so the
    last stands for fan_out**levels nodes (9**9 ≈ 387 million) while the text stays ~1 KB."""
    lines = ["  a0: &a0 [" + ", ".join(['"lol"'] * fan_out) + "]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan_out) + "]")
    return "shadow:\n  analysis:\n  " + "\n  ".join(lines) + "\n"


def deep_rule(depth: int) -> str:
    rule = "(" * depth + "PathPrefix(`/api`)" + ")" * depth
    return VALID_HTTP.replace('"PathPrefix(`/api`)"', f'"{rule}"')


def _cap_memory() -> None:  # in the child, before exec: a bomb hits the cap instead of the machine
    resource.setrlimit(resource.RLIMIT_AS, (1536 * 1024 * 1024, 1536 * 1024 * 1024))


def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shadow.cli", "config", "check", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, preexec_fn=_cap_memory)


def test_an_alias_bomb_is_one_line_naming_the_alias(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(VALID_HTTP + alias_bomb())
    done = config_check(path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    # The alias that crosses the limit: a7's list (7 × 9**7 nodes are more than 100,000).
    assert done.stderr.strip() == (f"error: {path}:13: aliases expand to more than {MAX_ALIAS_NODES} "
                                   "nodes (an alias bomb?)")


def test_an_alias_bomb_behind_a_duplicate_key_is_rejected_too(tmp_path: Path) -> None:
    # ruamel's duplicate-key message quotes both values: expanded, that was the bomb going off.
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(levels=4) + "  x: *a3\n  x: *a3\n" + VALID_HTTP)
    done = config_check(path)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line == f'error: {path}:8: shadow.x: duplicate key "x" (each key may appear once)'


def test_aliases_within_the_limit_still_work() -> None:
    text = VALID_HTTP.replace("    mono: {loadBalancer: {servers: [{url: \"http://127.0.0.1:9\"}]}}",
                              "    mono: {loadBalancer: &lb {servers: [{url: \"http://127.0.0.1:9\"}]}}\n"
                              "    copy: {loadBalancer: *lb}")
    text += "shadow:\n  analysis:\n    base: &m {latency: {margin: 0.1}}\n    other: {<<: *m, alpha: 0.01}\n"
    cfg = parse_config(text)
    assert set(cfg.services) == {"mono", "copy"}
    assert cfg.shadow.analysis["other"] == {"latency": {"margin": 0.1}, "alpha": 0.01}


def test_an_alias_inside_the_node_it_names_is_rejected() -> None:
    with pytest.raises(ConfigError) as err:
        load_yaml("http: {}\nloop: &l [1, *l]\n", "cfg.yaml")
    assert (err.value.line, "contains itself" in str(err.value)) == (2, True)


def test_a_3000_deep_structure_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(VALID_HTTP + "shadow:\n  analysis: " + "[" * 3000 + "]" * 3000 + "\n")
    done = config_check(path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"error: {path}:7: nested deeper than {MAX_NESTING} levels of mappings and lists"


def test_nesting_up_to_the_limit_is_fine() -> None:
    # the document's mapping is the first level, then the lists
    assert load_yaml("a: " + "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1) + "\n", "x") is not None
    with pytest.raises(ConfigError, match="nested deeper"):
        load_yaml("a: " + "[" * MAX_NESTING + "]" * MAX_NESTING + "\n", "x")


def test_a_3000_deep_rule_is_one_line_naming_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "deep-rule.yaml"
    path.write_text(deep_rule(3000))
    done = config_check(path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (f"error: {path}:3: http.routers.api.rule: nested deeper than 64 levels "
                                   "of parentheses and '!' at column 65")


def test_an_oversized_config_is_rejected_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("w") as fo:
        fo.write(VALID_HTTP)
        fo.write(("# padding\n" * 1024) * 5 * 1024)  # 50 MB of comments
    done = config_check(path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"error: {path}: larger than a config may be ({MAX_CONFIG_BYTES} bytes)"


def test_the_size_limit_applies_to_text_too_and_a_config_at_the_limit_loads(tmp_path: Path) -> None:
    padded = VALID_HTTP + "#" * (MAX_CONFIG_BYTES - len(VALID_HTTP) - 1) + "\n"
    assert len(padded.encode()) == MAX_CONFIG_BYTES
    path = tmp_path / "at-limit.yaml"
    path.write_text(padded)
    assert load_config(path).routers[0].name == "api"
    with pytest.raises(ConfigError, match="larger than a config may be"):
        parse_config(padded + "#\n")


def test_read_yaml_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        read_yaml_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        read_yaml_file(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"http: {}\n# caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        read_yaml_file(bad)
    assert (err.value.line, "not UTF-8" in str(err.value)) == (2, True)


CHAINED = VALID_HTTP.replace("service: mono}", "service: mono, middlewares: [c0]}") + "  middlewares:\n"


def test_a_chain_fan_out_bomb_is_refused_before_it_expands() -> None:
    # nine chains of nine of nine...: 9**9 middlewares per request once expanded
    mids = "".join(f"    c{i}: {{chain: {{middlewares: [{', '.join([f'c{i + 1}'] * 9)}]}}}}\n" for i in range(9))
    with pytest.raises(ConfigError) as err:
        parse_config(CHAINED + mids + "    c9: {stripPrefix: {prefixes: [/api]}}\n")
    assert str(err.value) == ("<string>:12: http.middlewares.c5.chain.middlewares[1]: chain expands to more "
                              "than 1000 middlewares")


def test_chains_3000_deep_are_one_line_not_a_recursion_error() -> None:
    mids = "".join(f"    c{i}: {{chain: {{middlewares: [c{i + 1}]}}}}\n" for i in range(3000))
    with pytest.raises(ConfigError, match=r"chains nested deeper than 64"):
        parse_config(CHAINED + mids + "    c3000: {stripPrefix: {prefixes: [/api]}}\n")
    shallow = "".join(f"    c{i}: {{chain: {{middlewares: [c{i + 1}]}}}}\n" for i in range(50))
    cfg = parse_config(CHAINED + shallow + "    c50: {stripPrefix: {prefixes: [/api]}}\n")
    assert cfg.routers[0].middlewares == ("c50",)
