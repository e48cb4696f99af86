"""Sample inputs that work offline, without any dataset: photographs shipped inside installed wheels."""
from __future__ import annotations

from pathlib import Path

from blazepose_tf.errors import InputError

SAMPLE_NAMES = ("sample",)


def sample_image_path() -> Path:
    """scikit-image's ``astronaut.png`` (public domain, NASA): a person, upper body, 512×512."""
    try:
        import skimage
    except ImportError:
        raise InputError("the 'sample' input needs scikit-image (pip install -r requirements.txt)") from None
    path = Path(skimage.__file__).parent / "data" / "astronaut.png"
    if not path.is_file():
        raise InputError(f"scikit-image has no bundled astronaut.png at {path}")
    return path
