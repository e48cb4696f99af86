"""Writes a grid of augmented training samples with their targets drawn, to look at the input pipeline.

    python -m blazepose_tf.training.debug --data 'DIR/train-*.tfrecord' --output grid.png [--num 16] [--seed 0]

Each tile: the augmented crop; the summed target heatmap tinted red; keypoints as dots (left orange, right
blue, centre white; hollow = not visible, small = teacher pseudo-label); the two auxiliary ROI points in green
joined by a line.
"""
from __future__ import annotations

import math
import os

import cv2
import numpy as np
from absl import flags

from blazepose_tf import cli
from blazepose_tf.contract import NUM_ROI_POINTS
from blazepose_tf.errors import UserError
from blazepose_tf.io.images import IMAGE_EXTENSIONS
from blazepose_tf.overlay import save_image
from blazepose_tf.topology import BLAZEPOSE_33

flags.DEFINE_string("data", None, "Glob of TFRecord shards from data.prepare.")
flags.DEFINE_string("output", "augmented_grid.png", "PNG to write.")
cli.define_overwrite_flag()
flags.DEFINE_integer("num", 16, "Samples to draw.", lower_bound=1, upper_bound=256)
flags.DEFINE_integer("seed", 0, "Augmentation seed.")
flags.DEFINE_bool("augment", True, "Apply training augmentation.")
FLAGS = flags.FLAGS


def draw_sample(image: np.ndarray, keypoints: np.ndarray, weight: np.ndarray, visible: np.ndarray,
                is_gt: np.ndarray, heatmap: np.ndarray, names) -> np.ndarray:
    """One annotated tile (uint8 RGB) from a sample's float image in [0, 1] and its targets."""
    img = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    hm = cv2.resize(np.clip(heatmap.sum(-1), 0, 1), img.shape[1::-1])
    img = (img * (1 - 0.5 * hm[..., None]) + np.array([255, 0, 0]) * 0.5 * hm[..., None]).astype(np.uint8)
    k = len(names)
    for j in range(k):
        if weight[j] <= 0:
            continue
        name = names[j]
        color = ((255, 140, 0) if name.startswith("left") else (0, 120, 255) if name.startswith("right")
                 else (255, 255, 255))
        center = (int(round(keypoints[j, 0])), int(round(keypoints[j, 1])))
        radius = 4 if is_gt[j] > 0 else 2
        cv2.circle(img, center, radius, color, -1 if visible[j] > 0 else 1, cv2.LINE_AA)
    a, b = keypoints[k, :2], keypoints[k + 1, :2]
    cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), (0, 255, 0), 1, cv2.LINE_AA)
    for p in (a, b):
        cv2.circle(img, (int(p[0]), int(p[1])), 3, (0, 255, 0), -1, cv2.LINE_AA)
    return img


def main(argv: list[str]) -> int:
    if not FLAGS.data:
        raise UserError("--data is required")
    cli.check_outputs([("--output", FLAGS.output)], overwrite=FLAGS.overwrite)
    # TensorFlow: imported once the flags are checked (and not for --help)
    from blazepose_tf.training.augment import AugmentConfig
    from blazepose_tf.training.data import TrackerDataConfig, tracker_dataset
    from blazepose_tf.training.tracker_targets import target_encoder

    if os.path.splitext(FLAGS.output)[1].lower() not in IMAGE_EXTENSIONS:
        raise UserError(f"--output must be an image file, got {FLAGS.output}")
    encode = target_encoder(BLAZEPOSE_33.num_keypoints + NUM_ROI_POINTS, with_offsets=False)
    cfg = TrackerDataConfig(batch_size=FLAGS.num, seed=FLAGS.seed,
                            augment=AugmentConfig() if FLAGS.augment else AugmentConfig.none())
    try:
        images, t = next(iter(tracker_dataset(os.path.expanduser(FLAGS.data), cfg, training=True,
                                              encode_targets=encode)))
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    except StopIteration:
        raise UserError(f"fewer than --num={FLAGS.num} samples in {FLAGS.data}") from None
    tiles = [draw_sample(images[i].numpy(), t["keypoints_px"][i].numpy(), t["heatmap_mask"][i].numpy(),
                         t["visibility"][i].numpy(), t["is_gt"][i].numpy(), t["heatmap"][i].numpy(),
                         BLAZEPOSE_33.keypoints) for i in range(images.shape[0])]
    cols = int(math.ceil(math.sqrt(len(tiles))))
    rows = int(math.ceil(len(tiles) / cols))
    h, w = tiles[0].shape[:2]
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    cli.check_still_replaceable("--output", FLAGS.output, FLAGS.overwrite, lost="the grid was not saved")
    save_image(FLAGS.output, grid)
    print(f"{len(tiles)} samples -> {FLAGS.output}")
    return 0


if __name__ == "__main__":
    cli.run(main)
