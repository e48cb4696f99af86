"""Quantization of the tracker presets: size, host latency and dev PCK@0.2 for none / fp16 / dynamic / int8.

    python -m benchmarks.quantization [--presets lite,full] [--weights lite=PATH,full=PATH]
        [--modes none,fp16,dynamic,int8] [--representative ../shared/data/lspet:train] [--num_calibration 200]
        [--eval ../shared/data/lspet:dev] [--num_eval 585] [--runs 100] [--rounds 5] [--out_dir out/quantization]
        [--output table.json]

For every preset (and, with ``--official_tracker``, MediaPipe's Full tracker converted to Keras, whose trained
weights make the PCK change meaningful even when the presets have none), the model (``--weights``: a ``.keras``
model or a ``.weights.h5`` for the preset; without it the preset is built untrained and its PCK is meaningless,
which the table says) is exported by :func:`export.to_tflite.export_model` in each mode (int8 calibrated on
``--num_calibration`` GT-aligned crops of ``--representative``); PCK@0.2 comes from the export report (the
exported model's landmarks on ground-truth-aligned crops of ``--eval``, projected back and scored as in
docs/design.md §8). Host latency is measured with ai-edge-litert + XNNPACK at 1 thread, all modes of a model
interleaved in the same run (:func:`export.bench.measure`), and reported as the speed-up over fp32 (fp32 median
/ mode median).

Target: full int8 at least 1.8× faster than fp32 with at most 1 point of PCK lost. Exit code 0 when every
preset meets it, 1 otherwise (2-4 for usage/data/model errors).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/quantization.py`
    sys.path.insert(0, str(_REPO))

from absl import flags  # noqa: E402

from blazepose_tf.contract import QUANTIZATIONS  # noqa: E402
from blazepose_tf.errors import ModelError, UserError  # noqa: E402

DEFAULT_LSPET = os.environ.get("BLAZEPOSE_TF_LSPET") or str(_REPO.parent / "shared" / "data" / "lspet")
SPEEDUP_TARGET = 1.8
PCK_LOSS_TARGET = 1.0
MODES = QUANTIZATIONS  # export.to_tflite --quantize names; "none" (float32) is the reference

flags.DEFINE_string("presets", "lite,full", "Tracker presets (blazepose_tf.models.TRACKER_PRESETS).")
flags.DEFINE_string("weights", "", "Trained weights per preset: preset=PATH (.keras model or .weights.h5), comma-separated.")
flags.DEFINE_bool("official_tracker", True, "Also run MediaPipe's Full tracker converted to Keras "
                  "(blazepose_tf.models.convert_official): trained weights, so its PCK changes are meaningful.")
flags.DEFINE_string("modes", ",".join(MODES), "Quantization modes to compare (none is the reference).")
flags.DEFINE_string("representative", f"{DEFAULT_LSPET}:train", "Calibration dataset spec (export.representative).")
flags.DEFINE_integer("num_calibration", 200, "int8 calibration crops.", lower_bound=1)
flags.DEFINE_string("eval", f"{DEFAULT_LSPET}:dev", "Annotated dataset spec for PCK@0.2 and parity.")
flags.DEFINE_integer("num_eval", 585, "Evaluation crops (585 = every scored LSPET dev person).", lower_bound=1)
flags.DEFINE_integer("runs", 100, "Timed runs per model at 1 thread.", lower_bound=1)
flags.DEFINE_integer("warmup", 10, "Warm-up runs per model.", lower_bound=0)
flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.", lower_bound=1)
flags.DEFINE_string("out_dir", "out/quantization", "Where the exported models and their reports go.")
flags.DEFINE_string("output", None, "Also write the table as JSON here.")
FLAGS = flags.FLAGS


def parse_weights(text: str) -> dict[str, Path]:
    """``lite=a.keras,full=b.weights.h5`` → {preset: path}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        preset, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--weights entries must be preset=PATH, got {item!r}")
        if not Path(path).is_file():
            raise ModelError(f"weights file not found: {path}")
        out[preset.strip()] = Path(path)
    return out


OFFICIAL_ROW = "official_full"


def load_tracker(preset: str, weights: Optional[Path]):
    """(Keras model, trained?) for a preset (or ``official_full``: the converted official Full tracker)."""
    from blazepose_tf.models import build_tracker
    from export.to_tflite import load_keras_model

    if preset == OFFICIAL_ROW:
        from blazepose_tf.models.convert_official import converted_model_path
        return load_keras_model(converted_model_path("pose_landmark_full")), True
    if weights is not None and weights.suffix == ".keras":
        return load_keras_model(weights), True
    try:
        models = build_tracker(preset)
    except KeyError as e:
        raise UserError(str(e.args[0])) from None
    if weights is not None:
        try:
            models.training.load_weights(weights)
        except Exception as e:  # noqa: BLE001 - any mismatch is a bad weights file for the user
            raise ModelError(f"cannot load {weights} into preset {preset!r}: {str(e).splitlines()[0]}") from None
        return models.training, True
    return models.training, False


def run_preset(preset: str, weights: Optional[Path], modes: list[str], out_dir: Path) -> list[dict[str, Any]]:
    """Exports and measures one preset; one table row per mode."""
    from export.bench import measure
    from export.to_tflite import export_model

    model, trained = load_tracker(preset, weights)
    rows = []
    for mode in modes:
        print(f"[{preset}] exporting {mode} ...", file=sys.stderr, flush=True)
        result = export_model(model, out_dir / f"tracker_{preset}_{mode}.tflite", mode,
                              representative=FLAGS.representative, num_calibration=FLAGS.num_calibration,
                              eval_spec=FLAGS.eval, num_eval=FLAGS.num_eval, name=f"tracker_{preset}",
                              log=lambda *a: print(*a, file=sys.stderr))
        rep = result.report
        pck = rep.get("pck") or {}
        rows.append({"preset": preset, "mode": mode, "trained": trained, "path": str(result.path),
                     "size_mb": rep["size_mb"],
                     "pck": pck.get("tflite", {}).get("pck"), "pck_keras": pck.get("keras", {}).get("pck"),
                     "num_eval": rep["parity"]["num_inputs"],
                     "max_rel_error": max(e["max_rel"] for e in rep["parity"]["outputs"].values())})
    print(f"[{preset}] timing {len(rows)} models at 1 thread ...", file=sys.stderr, flush=True)
    lat = {r.model: r for r in measure([(row["mode"], row["path"]) for row in rows], threads=[1], runs=FLAGS.runs,
                                       warmup=FLAGS.warmup, rounds=FLAGS.rounds)}
    base = lat.get("none")
    ref_pck = next((r["pck"] for r in rows if r["mode"] == "none"), None)
    for row in rows:
        m = lat[row["mode"]]
        row.update(median_ms=m.median_ms, p90_ms=m.p90_ms,
                   speedup=(base.median_ms / m.median_ms) if base else None,
                   pck_delta=(row["pck"] - ref_pck) if (row["pck"] is not None and ref_pck is not None) else None)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The printed table."""
    w = max([len(r["preset"]) for r in rows] + [6])
    head = (f"{'preset':<{w}} {'mode':<8} {'size MB':>8} {'1-thr ms':>9} {'vs fp32':>8} {'PCK@0.2':>8} "
            f"{'ΔPCK':>6} {'max rel err':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        pck = f"{r['pck']:.1f}" if r["pck"] is not None else "n/a"
        dp = f"{r['pck_delta']:+.1f}" if r["pck_delta"] is not None else "n/a"
        sp = f"{r['speedup']:.2f}x" if r["speedup"] is not None else "n/a"
        lines.append(f"{r['preset']:<{w}} {r['mode']:<8} {r['size_mb']:>8.2f} {r['median_ms']:>9.2f} {sp:>8} "
                     f"{pck:>8} {dp:>6} {r['max_rel_error']:>11.2g}" + ("" if r["trained"] else "  (untrained)"))
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(preset, pass, text) for the int8 target."""
    out = []
    for r in rows:
        if r["mode"] != "int8":
            continue
        ok_speed = r["speedup"] is not None and r["speedup"] >= SPEEDUP_TARGET
        ok_pck = r["pck_delta"] is not None and r["pck_delta"] >= -PCK_LOSS_TARGET
        note = "" if r["trained"] else " [untrained weights: PCK not meaningful, pass --weights]"
        dp = f"{r['pck_delta']:+.2f} points" if r["pck_delta"] is not None else "n/a"
        out.append((r["preset"], ok_speed and ok_pck,
                    f"{r['preset']} int8: {r['speedup']:.2f}x faster than fp32 (target >= {SPEEDUP_TARGET}x) "
                    f"{'PASS' if ok_speed else 'FAIL'}; PCK change {dp} "
                    f"(target >= -{PCK_LOSS_TARGET}) {'PASS' if ok_pck else 'FAIL'}{note}"))
    return out


def main(argv: list[str]) -> int:
    presets = [p.strip() for p in FLAGS.presets.split(",") if p.strip()]
    modes = [m.strip() for m in FLAGS.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or "none" not in modes:
        raise UserError(f"--modes must include none and only use {', '.join(MODES)}, got {FLAGS.modes!r}")
    weights = parse_weights(FLAGS.weights)
    unknown = sorted(set(weights) - set(presets))
    if unknown:
        raise UserError(f"--weights given for presets not in --presets: {', '.join(unknown)}")
    out_dir = Path(FLAGS.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    if FLAGS.official_tracker:
        presets.append(OFFICIAL_ROW)
    for preset in presets:
        rows += run_preset(preset, weights.get(preset), modes, out_dir)
    print(f"host: ai-edge-litert + XNNPACK, 1 thread, median of {FLAGS.runs} runs; PCK@0.2 (mid torso) on "
          f"{rows[0]['num_eval']} GT-aligned crops of {FLAGS.eval}")
    print(format_table(rows))
    results = verdicts(rows)
    for _, _, text in results:
        print(text)
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps({"rows": rows, "verdicts": [t for _, _, t in results]}, indent=1))
        print(f"table -> {FLAGS.output}")
    return 0 if results and all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    from blazepose_tf import cli

    cli.run(main)
