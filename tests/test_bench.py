"""`convnet bench`: what it measures and reports (never how fast: speed is not asserted in tests)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from convnet.cli import bench, main
from convnet.training.engine import native_bf16


def fake_results() -> dict:
    run = lambda train, predict: {"train_img_s": train, "predict_img_s": predict}
    return {"convnet": {"32": [run(200, 500), run(180, 520), run(220, 510)], "128": [run(300, 600)]},
            "peer a": {"32": [run(100, 400), run(150, 420), {"error": "crashed"}], "128": [run(400, 700)]},
            "peer b": {"32": [run(160, 300)]}}


def test_summary_takes_medians_and_divides_by_the_best_peer():
    summary = bench.summarise(fake_results(), peak_gflops=100.0)
    convnet32 = summary["convnet"]["32"]
    assert convnet32["train"] == {"median": 200, "min": 180, "max": 220}
    assert convnet32["predict"]["median"] == 510
    assert convnet32["ratio_to_best_peer"] == pytest.approx(200 / 160)  # peer b's 160 beats peer a's median 125
    assert summary["peer a"]["32"]["train"]["median"] == 125  # the failed run is left out, not counted as 0
    assert summary["convnet"]["128"]["ratio_to_best_peer"] == pytest.approx(300 / 400)
    assert convnet32["percent_of_peak"] == pytest.approx(100 * 200 * bench.TRAIN_GFLOP_PER_IMAGE / 100.0)
    assert "ratio_to_best_peer" not in summary["peer a"]["32"]


def test_functional_contestant_is_compared_with_the_sequential_not_counted_as_a_peer():
    results = {**fake_results(), "convnet functional": {"32": [{"train_img_s": 196, "predict_img_s": 500}]}}
    summary = bench.summarise(results, peak_gflops=100.0)
    assert summary["convnet functional"]["32"]["ratio_to_sequential"] == pytest.approx(196 / 200)
    assert summary["convnet"]["32"]["ratio_to_best_peer"] == pytest.approx(200 / 160)  # not 200 / 196
    assert "0.980x Sequential" in bench.table({"summary": summary})
    names = [name for name, _, _ in bench.contestants(bench.BenchConfig(functional=True), "cpu")[0]]
    assert names == ["convnet", "convnet functional"]


def test_table_has_a_row_per_contestant_and_marks_missing_batch_sizes():
    report = {"summary": bench.summarise(fake_results(), peak_gflops=100.0)}
    lines = bench.table(report).splitlines()
    assert lines[0].startswith("| contestant | train, batch 32 (img/s) | train, batch 128 (img/s) | predict")
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert set(rows) == {"convnet", "peer a", "peer b"}
    assert "200 (180-220), 1.25x best peer" in rows["convnet"]
    assert "| - |" in rows["peer b"]  # peer b was not run at batch 128


def test_peers_left_out_are_named_with_the_reason(monkeypatch):
    monkeypatch.setattr("convnet.training.engine.native_bf16", lambda device: False)
    monkeypatch.delenv("CONVNET_KERAS_PYTHON", raising=False)
    runners, reasons = bench.contestants(bench.BenchConfig(peers=True), "cpu")
    assert not set(reasons) & {name for name, _, _ in runners}
    assert "no native bf16" in reasons["pytorch channels_last bf16"]
    assert "--keras-python" in reasons["keras 3"]
    assert bench.contestants(bench.BenchConfig(peers=False), "cpu")[1] == {}
    monkeypatch.setattr("convnet.training.engine.native_bf16", lambda device: True)  # AVX512_BF16 or AMX
    runners, reasons = bench.contestants(bench.BenchConfig(peers=True), "cpu")
    assert "pytorch channels_last bf16" in {name for name, _, _ in runners}
    assert "pytorch channels_last bf16" not in reasons


def test_a_real_quick_bench_runs_every_contestant_in_its_own_process(tmp_path, fashion, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--device", "cpu", "--batch-size", "8", "--steps", "2", "--repeats", "1", "--peers",
                 "--predict-images", "100", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    # whether the CPU has native bf16 (AVX512_BF16, AMX) or not (AVX2): each peer is run or named as left out
    runners, left_out = bench.contestants(bench.BenchConfig(peers=True), "cpu")
    expected = {name for name, _, _ in runners}
    assert {"convnet", "pytorch eager fp32", "pytorch channels_last fp32"} <= expected
    assert ("pytorch channels_last bf16" in expected) != ("pytorch channels_last bf16" in left_out)
    assert ("pytorch channels_last bf16" in expected) == native_bf16(torch.device("cpu"))
    assert "pytorch torch.compile bf16, CUDA graph bf16" in left_out  # GPU-only
    assert set(report["results"]) == expected and report["left_out"] == left_out
    for name, by_batch in report["results"].items():
        assert set(by_batch) == {"8"}
        for runs in by_batch.values():
            assert len(runs) == 1 and runs[0]["train_img_s"] > 0 and runs[0]["predict_img_s"] > 0, (name, runs)
    assert report["predict_images"] == 100 and report["steps"] == 2 and report["peak"]["gflops"] > 0
    assert report["environment"]["torch"] and report["device"] == "cpu"
    assert "ratio_to_best_peer" in report["summary"]["convnet"]["8"]
    assert "| convnet |" in printed and f"Written: {out}" in printed
    for name, reason in left_out.items():
        assert f"Not run: {name} ({reason})" in printed
    assert "Not run: keras 3" in printed or os.environ.get("CONVNET_KERAS_PYTHON")


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "32,big"], "--batch-size must be comma-separated integers"),
    (["--batch-size", "0"], "batch_size"),
    (["--repeats", "0"], "repeats"),
    (["--steps", "5000", "--batch-size", "128"], "lower --steps"),
    (["--predict-images", "0"], "predict_images"),
    pytest.param(["--device", "cuda"], "cuda", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_settings_are_refused_before_anything_runs(argv, message, fashion, tmp_path, capsys):
    assert main(["bench", "--device", "cpu", "--out", str(tmp_path / "b.json"), *argv]) == 2  # a later --device wins
    err = capsys.readouterr().err
    assert err.startswith("convnet bench: error: ") and message in err, err
    assert not (tmp_path / "b.json").exists()


def test_export_comparison_takes_medians_and_a_ratio():
    runs = [{"predict_img_s_convnet": c, "predict_img_s_onnxruntime": o, "max_difference": d}
            for c, o, d in [(900, 1000, 1e-7), (1100, 1000, 2e-7), (1000, 800, 0.0)]]
    stats = bench._export_stats([*runs, {"error": "crashed"}])
    assert (stats["convnet"], stats["onnxruntime"], stats["max_difference"]) == (1000, 1000, 2e-7)
    assert stats["ratio"] == pytest.approx(1.0)
    table = bench.export_table({"128": stats, "32": bench._export_stats([{"error": "no onnxruntime"}])})
    lines = table.splitlines()
    assert lines[2].startswith("| 32 ") and "error: no onnxruntime" in lines[2]
    assert "| 128 | 1,000 | 1,000 | 1.00x (largest difference 2e-07) |" in table
