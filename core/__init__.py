"""Pure logic shared by every front door: decoding, settings, errors, runtimes, the declarations; no eKuiper.

OpenCV's readers refuse images over OPENCV_IO_MAX_IMAGE_PIXELS (default 2^30), a backstop should a
header ever read differently in core.image_input and in OpenCV. OpenCV reads it once, when its library
loads at `import cv2` (not at the first decode; tests/integration/test_bombs.py shows both), so it is
set here, before any module of ours can load cv2: every process imports a core module first (the
worker, the service, the camera bridge), and the model modules load cv2 only after. Default: the
default input.max_pixels; an operator who raises input.max_pixels sets both.
"""
import os

from core.settings import defaults

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(defaults("input")["max_pixels"]))
