"""Endpoint templating: static placeholders, learned high-cardinality segments, explicit overrides."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from analyzers.endpoints import EndpointTemplater, learn_from_capture
from shadow.capture.endpoints import template_path
from shadow.errors import ConfigError
from tests.test_diffs_table import exchange_row, write_capture

USERS = [f"/users/{name}/orders/{n}" for name in ("alice", "bob", "carol", "dave", "erin", "frank") for n in (1, 2)]


def test_static_placeholders_without_learning() -> None:
    t = EndpointTemplater()
    assert t.template("/api/orders/123") == "/api/orders/{id}"
    assert t.template("/u/0b8f5e0e-1d2c-4c1a-9a0e-2f1e3d4c5b6a/days/2026-11-26") == "/u/{uuid}/days/{date}"
    assert t.template("/api/orders/123?x=1") == "/api/orders/{id}"
    assert t.template("/") == "/"
    assert t.template("/users/alice") == "/users/alice"


def test_learned_high_cardinality_segment() -> None:
    t = EndpointTemplater.learn([*USERS, "/users/me", "/health"], threshold=5)
    assert t.template("/users/alice/orders/7") == "/users/{name}/orders/{id}"
    assert t.template("/users/zoe/orders/1") == "/users/{name}/orders/{id}"  # unseen value, same position
    assert t.template("/health") == "/health"  # low-cardinality siblings stay literal
    assert t.learned() == ["/users/{name}"]


def test_below_threshold_stays_literal() -> None:
    t = EndpointTemplater.learn(USERS, threshold=6)  # exactly 6 distinct names: not more than 6
    assert t.template("/users/alice/orders/1") == "/users/alice/orders/{id}"


def test_learning_is_per_parent_prefix() -> None:
    paths = [f"/a/{i}x/b" for i in range(10)] + [f"/c/{s}" for s in "pq"]
    t = EndpointTemplater.learn(paths, threshold=3, placeholder="{slug}")
    assert t.template("/a/7x/b") == "/a/{slug}/b"
    assert t.template("/c/p") == "/c/p"


def test_explicit_templates_win() -> None:
    t = EndpointTemplater.learn(USERS, threshold=2, explicit=["/users/{user}/orders/{order}", "/files/{path*}"])
    assert t.template("/users/alice/orders/1") == "/users/{user}/orders/{order}"
    assert t.template("/files/a/b/c.txt") == "/files/{path*}"
    assert t.template("/files") == "/files"  # a rest parameter needs at least one segment
    assert t.template("/users/alice") == "/users/{name}"


@pytest.mark.parametrize("bad", ["no-slash", "/a/{x*}/b", "/a/{x", "/a/b{x}"])
def test_bad_explicit_template_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        EndpointTemplater(explicit=["/ok/{id}", bad])
    assert err.value.field == "shadow.endpoints[1]"


def test_vectorised_over_arrow_and_pandas() -> None:
    t = EndpointTemplater.learn(USERS, threshold=5)
    arrow = pa.chunked_array([["/users/alice/orders/1", None], ["/users/bob/orders/2", "/x/9"]])
    assert t.template_many(arrow).to_pylist() == ["/users/{name}/orders/{id}", None, "/users/{name}/orders/{id}",
                                                  "/x/{id}"]
    series = pd.Series(["/users/carol/orders/3", None, "/x/1"], index=[10, 11, 12])
    out = t.template_many(series)
    assert list(out.index) == [10, 11, 12]
    assert out.tolist() == ["/users/{name}/orders/{id}", None, "/x/{id}"]
    assert t.template_many(["/users/dave/orders/1"]) == ["/users/{name}/orders/{id}"]


def test_learn_from_capture(tmp_path: Path) -> None:
    rows = [exchange_row(f"r{i}", "primary", body={}, path=f"/users/{name}", endpoint=f"/users/{name}")
            for i, name in enumerate(["ann", "ben", "cat", "dan"])]
    write_capture(tmp_path, rows)
    t = learn_from_capture(tmp_path, threshold=3)
    assert t.template("/users/eve") == "/users/{name}"


@pytest.mark.parametrize(("path", "expected"), [
    # ids are templated by default, whatever their shape
    ("/etag/abc12", "/etag/{slug}"),
    ("/etag/abc16", "/etag/{slug}"),
    ("/api/users/ada-lovelace-17", "/api/users/{slug}"),
    ("/api/users/ada-lovelace-5", "/api/users/{slug}"),
    ("/orders/ORD-2024-0017/items", "/orders/{slug}/items"),
    ("/t/dGhpc0lzQVRva2VuMTIzNA", "/t/{slug}"),
    ("/api/orders/123", "/api/orders/{id}"),
    ("/files/0b8f5e0e1d2c4c1a", "/files/{hex}"),
    ("/u/0b8f5e0e-1d2c-4c1a-9a0e-2f1e3d4c5b6a", "/u/{uuid}"),
    ("/days/2026-11-26", "/days/{date}"),
    # words stay words
    ("/api/orders", "/api/orders"),
    ("/v2/healthz", "/v2/healthz"),
    ("/api/v10/orders", "/api/v10/orders"),
    ("/apis/apps/v1beta1", "/apis/apps/v1beta1"),
    ("/oauth2/token", "/oauth2/token"),
    ("/hash/md5", "/hash/md5"),
    ("/net/ipv6", "/net/ipv6"),
    ("/s3/buckets", "/s3/buckets"),
    ("/status/not-found", "/status/not-found"),
    ("/anything/lookup", "/anything/lookup"),
    ("/getUserProfileSettingsPage", "/getUserProfileSettingsPage"),
    ("/", "/"),
])
def test_slug_like_segments_are_templated_by_default(path: str, expected: str) -> None:
    assert template_path(path) == expected
    assert EndpointTemplater().template(path) == expected  # the analyzers' static layer agrees
