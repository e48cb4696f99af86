"""Per-image latency of our IMAGE-mode pipeline vs MediaPipe 0.10.21's legacy Pose pipeline, one run.

    python -m benchmarks.pipeline_speed [--num_images 100] [--split dev] [--threads 1] [--cpu 0]
                                        [--warmup 3] [--rounds 3] [--output out.json]

Both pipelines see the same images (the first ``--num_images`` scored LSPET images of the split, as in
:mod:`benchmarks.parity_mediapipe`) and the same CPU budget: this process and the MediaPipe worker are each
pinned (``os.sched_setaffinity``) to the ``--threads`` cores starting at ``--cpu`` (one core by default),
and they take turns image by image (MediaPipe runs as a long-lived worker,
:class:`benchmarks.mediapipe_env.LegacyPoseServer`), never at the same time, so both see the same machine
load; who goes first alternates. Ours uses ``num_threads=--threads``; MediaPipe's legacy graph uses its
desktop default of one XNNPACK thread (not configurable from the legacy API).

Timing covers the pipeline call only (``tracker.process(rgb)`` / ``pose.process(rgb)``), after ``--warmup``
calls on the first image; images are decoded beforehand. With ``--rounds`` R, every image is timed R times
per pipeline and its latency is the median of those. Prints median and p90 per image for both and the
ratio ours/MediaPipe (target <= 1.0x, PASS/FAIL); exit code 0 on PASS, 1 on FAIL.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # allow `python benchmarks/pipeline_speed.py`
    sys.path.insert(0, str(_REPO))

RATIO_TARGET = 1.0


def pin_process(cores: set[int]) -> set[int]:
    """Pins every existing thread of this process (and so all threads started later) to ``cores``."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that just ended
    os.sched_setaffinity(0, cores)
    return os.sched_getaffinity(0)


def _stats(values_ms: list[float]) -> dict:
    import numpy as np

    v = np.asarray(values_ms, dtype=np.float64)
    return {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
            "mean_ms": float(v.mean()), "min_ms": float(v.min()), "num": int(v.size)}


def measure(num_images: int, split: str, threads: int, cpu: int, warmup: int, rounds: int, data_dir: str,
            output: Optional[str] = None, overwrite: Optional[bool] = None) -> tuple[dict, bool]:
    """Runs both pipelines on the same images, prints the report, returns (summary, ratio target met)."""
    import numpy as np

    from blazepose_tf.errors import UserError

    cores = set(range(cpu, cpu + threads))
    available = os.sched_getaffinity(0)
    if not cores <= available:
        raise UserError(f"cores {sorted(cores)} are not all available "
                        f"(this process may use {sorted(available)})")
    pinned = pin_process(cores)

    from benchmarks.mediapipe_env import LegacyPoseServer
    from benchmarks.parity_mediapipe import load_rgb, make_tracker, select_scored_images, write_summary

    images = select_scored_images(data_dir, split, num_images)
    rgbs = [load_rgb(im.path) for im in images]
    print(f"LSPET {split}: {len(images)} scored images, threads={threads}, pinned to cores {sorted(pinned)} "
          f"(MediaPipe worker: same cores), warm-up {warmup} calls on the first image, {rounds} round(s) "
          f"interleaved image by image; per-image latency = median over rounds")

    n = len(images)
    mp_ms = np.zeros((rounds, n))
    our_ms = np.zeros((rounds, n))
    mp_found = our_found = 0
    with LegacyPoseServer(threads_pinned=True, cpu=sorted(cores), warmup=warmup) as server:
        meta = server.meta
        tracker = make_tracker(threads)
        for _ in range(max(0, warmup)):
            tracker.process(rgbs[0])
        for r in range(rounds):
            for i, (im, rgb) in enumerate(zip(images, rgbs)):
                for which in ((0, 1) if (i + r) % 2 == 0 else (1, 0)):  # alternate who goes first
                    if which == 0:
                        res = server.process(im.path)
                        if res["latency_ms"] is None:
                            raise UserError(f"MediaPipe could not read {im.path}")
                        mp_ms[r, i] = res["latency_ms"]
                        mp_found += int(r == 0 and res["landmarks"] is not None)
                    else:
                        t0 = time.perf_counter()
                        poses = tracker.process(rgb)
                        our_ms[r, i] = (time.perf_counter() - t0) * 1000.0
                        our_found += int(r == 0 and len(poses) > 0)

    mp_img, our_img = np.median(mp_ms, axis=0), np.median(our_ms, axis=0)
    ours, mp = _stats(list(our_img)), _stats(list(mp_img))
    ratio = ours["median_ms"] / mp["median_ms"]
    ratio_p90 = ours["p90_ms"] / mp["p90_ms"]
    passed = bool(ratio <= RATIO_TARGET)
    print(f"mediapipe {meta['mediapipe_version']} legacy (Full, static)   median {mp['median_ms']:7.2f} ms   "
          f"p90 {mp['p90_ms']:7.2f} ms   ({mp_found}/{n} with a person, cores {meta['cpu_affinity']})")
    print(f"ours PoseTracker(mode='image', roi_passes=1, num_threads={threads})   median {ours['median_ms']:7.2f} ms   "
          f"p90 {ours['p90_ms']:7.2f} ms   ({our_found}/{n} with a person)")
    print(f"ratio ours/mediapipe   median {ratio:.3f}x   p90 {ratio_p90:.3f}x   "
          f"[{'PASS' if passed else 'FAIL'}: median ratio <= {RATIO_TARGET:.1f}x]")

    summary = {"split": split, "num_images": n, "threads": threads, "cores": sorted(pinned), "warmup": warmup,
               "rounds": rounds, "mediapipe": {**mp, "found": mp_found, "meta": meta},
               "ours": {**ours, "found": our_found}, "ratio_median": ratio, "ratio_p90": ratio_p90,
               "target": RATIO_TARGET, "pass": passed,
               "per_image": [{"path": str(im.path), "ours_ms": our_ms[:, i].tolist(),
                              "mediapipe_ms": mp_ms[:, i].tolist()} for i, im in enumerate(images)]}
    write_summary(summary, output, overwrite)
    return summary, passed


def _define_flags() -> None:
    from absl import flags

    from blazepose_tf import cli

    from benchmarks.parity_mediapipe import DEFAULT_DATA_DIR

    flags.DEFINE_integer("num_images", 100, "Number of scored images (first N of the split).", lower_bound=1)
    flags.DEFINE_string("split", "dev", "Split name in splits.json.")
    flags.DEFINE_integer("threads", 1, "Threads (and pinned cores) for both pipelines.", lower_bound=1)
    flags.DEFINE_integer("cpu", 0, "First core to pin to.", lower_bound=0)
    flags.DEFINE_integer("warmup", 3, "Warm-up calls on the first image before timing.", lower_bound=0)
    flags.DEFINE_integer("rounds", 3, "Passes over the images; per-image latency is the median.", lower_bound=1)
    flags.DEFINE_string("output", None, "Optional JSON file for the full results.")
    cli.define_overwrite_flag()
    flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "LSPET folder (annotations.json, splits.json, images/).")


def main(argv: list[str]) -> int:
    from absl import flags

    from blazepose_tf import cli

    FLAGS = flags.FLAGS
    cli.check_outputs([("--output", FLAGS.output)], [("--data_dir", FLAGS.data_dir)], overwrite=FLAGS.overwrite)
    _, passed = measure(FLAGS.num_images, FLAGS.split, FLAGS.threads, FLAGS.cpu, FLAGS.warmup,
                        FLAGS.rounds, FLAGS.data_dir, FLAGS.output, FLAGS.overwrite)
    return 0 if passed else 1


if __name__ == "__main__":
    from blazepose_tf import cli

    _define_flags()
    cli.run(main)
