"""metrics: every series, its labels and values, as a scraper parses them."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from cntr_sync._version import __version__
from cntr_sync.metrics import PASS_DURATION_BUCKETS, PASS_RESULTS, Metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def pair_samples(samples: Samples, pair: str) -> set[str]:
    return {name for name, labels in samples if ("pair", pair) in labels}


def test_build_info_and_prefix() -> None:
    samples = scrape(Metrics())
    assert value(samples, "cntr_sync_build_info", version=__version__) == 1
    assert all(name.startswith("cntr_sync_") for name, _ in samples)


def test_own_registry_not_the_global_one() -> None:
    metrics = Metrics()
    metrics.record_pass("a", "success", 1.0)
    assert metrics.registry is not REGISTRY
    assert (
        REGISTRY.get_sample_value("cntr_sync_passes_total", {"pair": "a", "result": "success"})
        is None
    )
    # Two instances in one process must not clash over names.
    Metrics().record_pass("a", "success", 1.0)


def test_record_request() -> None:
    metrics = Metrics()
    metrics.record_request("list_files", 200)
    metrics.record_request("list_files", 200)
    metrics.record_request("create_file", 503)
    metrics.record_request("create_file", None)
    samples = scrape(metrics)
    name = "cntr_sync_api_requests_total"
    assert value(samples, name, operation="list_files", status="200") == 2
    assert value(samples, name, operation="create_file", status="503") == 1
    assert value(samples, name, operation="create_file", status="error") == 1


def test_record_pass_counts_durations_and_transfers() -> None:
    metrics = Metrics()
    metrics.record_pass(
        "docs", "success", 0.02, uploaded_files=3, deleted_files=1, uploaded_bytes=4096
    )
    metrics.record_pass("docs", "success", 42.0, uploaded_files=2, uploaded_bytes=10)
    metrics.record_pass("docs", "partial", 700.0, deleted_files=2)
    samples = scrape(metrics)

    assert value(samples, "cntr_sync_passes_total", pair="docs", result="success") == 2
    assert value(samples, "cntr_sync_passes_total", pair="docs", result="partial") == 1
    assert value(samples, "cntr_sync_passes_total", pair="docs", result="noop") == 0
    assert value(samples, "cntr_sync_passes_total", pair="docs", result="error") == 0

    files = "cntr_sync_files_transferred_total"
    assert value(samples, files, pair="docs", action="upload") == 5
    assert value(samples, files, pair="docs", action="delete") == 3
    bytes_name = "cntr_sync_bytes_transferred_total"
    assert value(samples, bytes_name, pair="docs", direction="upload") == 4106

    hist = "cntr_sync_pass_duration_seconds"
    assert value(samples, f"{hist}_count", pair="docs") == 3
    assert value(samples, f"{hist}_sum", pair="docs") == pytest.approx(742.02)
    assert value(samples, f"{hist}_bucket", pair="docs", le="0.025") == 1
    assert value(samples, f"{hist}_bucket", pair="docs", le="60.0") == 2
    assert value(samples, f"{hist}_bucket", pair="docs", le="600.0") == 2
    assert value(samples, f"{hist}_bucket", pair="docs", le="+Inf") == 3
    buckets = {dict(labels)["le"] for name, labels in samples if name == f"{hist}_bucket"}
    assert len(buckets) == len(PASS_DURATION_BUCKETS) + 1
    assert min(PASS_DURATION_BUCKETS) == 0.01
    assert max(PASS_DURATION_BUCKETS) == 600.0


def test_downloads_local_deletes_and_conflicts_are_counted() -> None:
    metrics = Metrics()
    metrics.record_pass(
        "docs",
        "success",
        0.1,
        downloaded_files=4,
        deleted_local_files=1,
        downloaded_bytes=900,
        conflicts=2,
    )
    samples = scrape(metrics)
    files = "cntr_sync_files_transferred_total"
    assert value(samples, files, pair="docs", action="download") == 4
    assert value(samples, files, pair="docs", action="delete_local") == 1
    assert value(samples, files, pair="docs", action="upload") == 0
    assert (
        value(samples, "cntr_sync_bytes_transferred_total", pair="docs", direction="download")
        == 900
    )
    assert value(samples, "cntr_sync_conflicts_total", pair="docs") == 2


def test_first_use_of_a_pair_starts_counters_at_zero() -> None:
    metrics = Metrics()
    metrics.set_pending("fresh", 4)
    samples = scrape(metrics)
    for result in PASS_RESULTS:
        assert value(samples, "cntr_sync_passes_total", pair="fresh", result=result) == 0
    assert value(samples, "cntr_sync_files_transferred_total", pair="fresh", action="upload") == 0
    assert value(samples, "cntr_sync_files_transferred_total", pair="fresh", action="delete") == 0
    assert (
        value(samples, "cntr_sync_bytes_transferred_total", pair="fresh", direction="upload") == 0
    )
    assert value(samples, "cntr_sync_container_recreations_total", pair="fresh") == 0
    assert value(samples, "cntr_sync_pass_duration_seconds_count", pair="fresh") == 0


def test_negative_numbers_never_raise() -> None:
    metrics = Metrics()
    metrics.record_pass("p", "error", -1.0, uploaded_files=-2, deleted_files=-1, uploaded_bytes=-5)
    metrics.set_pending("p", -3)
    samples = scrape(metrics)
    assert value(samples, "cntr_sync_passes_total", pair="p", result="error") == 1
    assert value(samples, "cntr_sync_files_transferred_total", pair="p", action="upload") == 0
    assert value(samples, "cntr_sync_pending_changes", pair="p") == 0


def test_gauges_and_recreations() -> None:
    metrics = Metrics()
    metrics.set_pending("p", 7)
    metrics.set_pending("p", 2)
    metrics.set_last_success("p", 1_700_000_000.5)
    metrics.record_recreation("p")
    metrics.record_recreation("p")
    metrics.set_pair_up("p", True)
    metrics.set_pair_up("q", False)
    samples = scrape(metrics)
    assert value(samples, "cntr_sync_pending_changes", pair="p") == 2
    assert value(samples, "cntr_sync_last_success_timestamp_seconds", pair="p") == 1_700_000_000.5
    assert value(samples, "cntr_sync_container_recreations_total", pair="p") == 2
    assert value(samples, "cntr_sync_pair_up", pair="p") == 1
    assert value(samples, "cntr_sync_pair_up", pair="q") == 0


def test_forget_pair_removes_only_that_pair() -> None:
    metrics = Metrics()
    for pair in ("gone", "kept"):
        metrics.record_pass(pair, "success", 1.0, uploaded_files=1, uploaded_bytes=1)
        metrics.set_pending(pair, 1)
        metrics.set_last_success(pair, 1.0)
        metrics.record_recreation(pair)
        metrics.set_pair_up(pair, True)
    metrics.record_request("list_files", 200)
    before = pair_samples(scrape(metrics), "kept")

    metrics.forget_pair("gone")
    metrics.forget_pair("never-seen")
    samples = scrape(metrics)

    assert pair_samples(samples, "gone") == set()
    assert pair_samples(samples, "kept") == before
    assert {
        "cntr_sync_passes_total",
        "cntr_sync_pass_duration_seconds_bucket",
        "cntr_sync_files_transferred_total",
        "cntr_sync_bytes_transferred_total",
        "cntr_sync_pending_changes",
        "cntr_sync_last_success_timestamp_seconds",
        "cntr_sync_container_recreations_total",
        "cntr_sync_pair_up",
    } <= before
    assert value(samples, "cntr_sync_api_requests_total", operation="list_files", status="200") == 1
    assert value(samples, "cntr_sync_build_info", version=__version__) == 1

    # A pair that comes back (a later reload) starts again from zero.
    metrics.record_pass("gone", "noop", 0.1)
    samples = scrape(metrics)
    assert value(samples, "cntr_sync_passes_total", pair="gone", result="success") == 0
    assert value(samples, "cntr_sync_passes_total", pair="gone", result="noop") == 1


def test_no_created_series() -> None:
    metrics = Metrics()
    metrics.record_request("list_files", 200)
    metrics.record_pass("a", "success", 1.0, uploaded_files=1, uploaded_bytes=3, conflicts=1)
    metrics.record_recreation("a")
    body = metrics.render()[0].decode()
    # Counters and the histogram are there, without a *_created sample for any of them.
    assert "cntr_sync_passes_total{" in body and "cntr_sync_pass_duration_seconds_count{" in body
    assert "_created" not in body
