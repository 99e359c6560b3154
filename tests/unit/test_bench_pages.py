"""bench/pages.py writes docs/benchmarks.md and its charts from a run's results: here from a small
hand-made results dict (no bench runs, no timings), into a temporary folder."""
import xml.etree.ElementTree as ET

from bench.pages import CHARTS, render

SVG = "{http://www.w3.org/2000/svg}svg"


def throughput_rows(per_frame: float) -> dict:
    return {"floor, 1 worker: litert at 1 thread": {"frames_per_s": per_frame},
            "floor, 1 worker: openvino at 2 threads": {"frames_per_s": per_frame * 1.2},
            "floor, 2 workers: 1 model with 2 streams (openvino)": {"frames_per_s": per_frame * 2},
            "one-frame floor": {"frames_per_s": per_frame * 1.2},
            "box floor": {"frames_per_s": per_frame * 2},
            "per-frame rule, 1 rule": {"frames_per_s": per_frame, "p50_s": 0.2, "p95_s": 0.3},
            **{f"window rule, CountWindow({w})": {"frames_per_s": per_frame * 1.5, "p50_s": 0.1 * w, "p95_s": 0.2 * w}
               for w in (4, 8, 16)},
            "picked by the plugin": {"per-frame": "openvino at 2 threads", "window": "1 model with 2 streams"}}


RESULTS = {
    "bench": {"meta": {"date": "2026-12-07T04:00:00+00:00"},
              "call": {"labelImage": {"cat 1080p": {"median_ms": 20.0, "p95_ms": 25.0}},
                       "inference": {"surface 1080p": {"median_ms": 40.0, "p95_ms": 50.0}}},
              "nng": {"labelImage": {"cat 1080p": {"median_ms": 22.0, "p95_ms": 30.0}},
                      "inference": {"surface 1080p": {"median_ms": 44.0, "p95_ms": 60.0}}}},
    "throughput": {"date": "2026-12-07T04:10:00+00:00",
                   "rows": {"labelImage": throughput_rows(20.0), "inference": throughput_rows(10.0)}},
    "service-bench": {"rows": [{"transport": t, "function": f, "concurrency": c, "requests_per_s": 10.0 * c,
                                "p50_ms": 50.0, "p95_ms": 80.0}
                               for t in ("direct", "http", "grpc") for f in ("labelImage", "inference")
                               for c in (1, 4, 16)]},
    "grpc-stream-bench": {"rows": [{"function": f, "mode": m, "frames_per_s": 30.0, "p50_ms": 40.0, "p95_ms": 90.0,
                                    "over_unary": 1.5} for f in ("labelImage", "inference")
                                   for m in ("unary, one at a time", "one stream")]},
}
MACHINE = {"cpu": "Test CPU 9000", "cores": 2}


def test_page_names_each_chart_and_the_charts_are_svg(tmp_path):
    page = render(RESULTS, {"throughput": "| a | b |\n| --- | --- |\n| 1 | 2 |\n"}, tmp_path, MACHINE, "2026-12-07")
    text = page.read_text()
    assert page == tmp_path / "benchmarks.md"
    for name, title in CHARTS.items():
        assert f"![{title}](bench/{name})" in text
        root = ET.parse(tmp_path / "bench" / name).getroot()
        assert root.tag == SVG, name
        drawn_text = " ".join("".join(e.itertext()) for e in root.iter("{http://www.w3.org/2000/svg}text"))
        assert "labelImage" in drawn_text and "inference" in drawn_text, name  # a series per function
    assert "Test CPU 9000, 2 cores" in text and "2026-12-07" in text
    assert "compare only within one run" in text
    assert text.count("p95 (nearest rank") == 1
    # Medians and ratios from the dict: the best window over the per-frame function, the stream over unary.
    assert "CountWindow(4) 30.0 frames/s, 1.5x the per-frame function" in text
    assert "1.5x unary calls one at a time" in text
    assert "| 1 | 2 |" in text  # the bench's own table
    assert "Not run in this run (no build/camera-bench.md)" in text
    assert "per frame openvino at 2 threads; window 1 model with 2 streams" in text


def test_a_chart_without_data_is_not_drawn_and_an_old_one_goes(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "frames-per-window.svg").write_text("<svg/>")  # from an earlier run
    text = render({"bench": RESULTS["bench"]}, {}, tmp_path, MACHINE, "2026-12-07").read_text()
    assert not (tmp_path / "bench" / "frames-per-window.svg").exists()
    assert "Not drawn: this run measured none of its figures (frames-per-window.svg)" in text
    assert ET.parse(tmp_path / "bench" / "latency.svg").getroot().tag == SVG  # the nng rows alone
