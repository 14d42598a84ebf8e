"""dlib's face chip: the 150x150 crop its recognition network was trained on, cut as dlib's
``get_face_chip`` cuts it (``dlib/image_transforms/interpolation.h``), from the landmarks of
dlib's own 5-point predictor run inside the detector's box.

The chip is not the 112x112 crop: other points (eye corners and the base of the nose, not eye
centres and mouth corners), its own template in a unit square padded by a quarter on each
side, and a larger, taller view of the head. On the development pairs the same network lost
0.9 point of accuracy and 5 of TAR@FAR 1e-3 when the chip was instead placed from YuNet's
points (a template fitted on ``celeba_train``; docs/concepts.md), so the predictor is ported,
not approximated.

The chip maps each of its pixels to the image by the least-squares similarity from the chip's
template points to the landmarks (fitted in that direction, as dlib does), sampled bilinearly;
where the face is more than twice the chip's size, the image is first halved with a Gaussian
pyramid (dlib's own: its filter, its truncation, its idea of where a point goes) until it is
not, so the chip is not aliased. Pixel for pixel the chip is dlib's but for float rounding.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facegallery.models.dlib_landmarks import ShapePredictor
from facegallery.vision.align import similarity_transform

CHIP_SIZE = 150
PADDING = 0.25
# dlib's 5-point template in the unpadded unit square, in the predictor's order.
TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
CHIP_POINTS = (PADDING + TEMPLATE) / (2 * PADDING + 1) * CHIP_SIZE


def chip_of_face(
    predictor: ShapePredictor, image: np.ndarray, grey: np.ndarray, box: np.ndarray
) -> np.ndarray:
    """dlib's chip of the face a detector boxed: ``box`` (4,) x1, y1, x2, y2 in ``image``
    (H, W, 3) uint8, ``grey`` its ``dlib_grey``. The landmark model reads the face inside the
    box, rounded to whole pixels as a dlib rectangle."""
    left, top, right, bottom = (int(np.floor(v + 0.5)) for v in box[:4])
    return extract_chip(image, locate_landmarks(predictor, grey, (left, top, right, bottom)))


def locate_landmarks(
    predictor: ShapePredictor, grey: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray:
    """The (5, 2) landmarks of the face in ``box`` (left, top, right, bottom, inclusive, as
    dlib's rectangle) of ``grey`` (H, W) uint8 (dlib's grey: the channels' mean, truncated),
    in whole pixels as dlib gives them."""
    left, top, right, bottom = box
    extent = np.array([right - left, bottom - top], np.float64)
    origin = np.array([left, top], np.float64)
    height, width = grey.shape
    trees = np.arange(predictor.pixel_1.shape[1])
    depth = int(math.log2(predictor.leaves.shape[2]))
    splits = predictor.pixel_1.shape[2]
    mean_shape = predictor.mean_shape
    shape = mean_shape.copy()
    for cascade in range(predictor.pixel_1.shape[0]):
        # The offsets turn with the shape: dlib applies the similarity's 2x2 part in float32.
        rotation = similarity_transform(mean_shape, shape)[:, :2].astype(np.float32)
        where = predictor.offset[cascade] @ rotation.T + shape[predictor.anchor[cascade]]
        pixel = np.floor(where * extent + origin + 0.5).astype(np.int64)
        inside = (
            (pixel[:, 0] >= 0) & (pixel[:, 0] < width) & (pixel[:, 1] >= 0) & (pixel[:, 1] < height)
        )
        values = np.zeros(len(pixel), np.float32)  # dlib reads 0 outside the image
        values[inside] = grey[pixel[inside, 1], pixel[inside, 0]]
        node = np.zeros(len(trees), np.int64)
        for _ in range(depth):
            first = values[predictor.pixel_1[cascade, trees, node]]
            second = values[predictor.pixel_2[cascade, trees, node]]
            goes_left = first - second > predictor.threshold[cascade, trees, node]
            node = np.where(goes_left, 2 * node + 1, 2 * node + 2)
        # Added one tree at a time in float32, as dlib does (a pairwise sum rounds otherwise,
        # and a pixel on a rounding edge then moves).
        updates = predictor.leaves[cascade, trees, node - splits]
        shape = np.cumsum(np.concatenate([shape[None], updates]), axis=0, dtype=np.float32)[-1]
    landmarks: np.ndarray = np.floor(shape * extent + origin + 0.5)
    return landmarks


def dlib_grey(image: np.ndarray) -> np.ndarray:
    """dlib's grey level of a colour (H, W, 3) uint8 image: the three channels' mean,
    truncated (the order of the channels does not matter)."""
    grey: np.ndarray = (image.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)
    return grey


def extract_chip(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The (150, 150, 3) chip of ``image`` (H, W, 3) uint8, channels kept in their order,
    whose template points land nearest to ``landmarks`` (5, 2); black where dlib's would be
    (past the image's edge)."""
    fitted = similarity_transform(CHIP_POINTS, landmarks)
    scale = math.hypot(*fitted[:, 0])  # image pixels per chip pixel
    if not scale > 1e-3:  # landmarks on one point: no face to cut
        return np.zeros((CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    chip_to_image = _dlib_mapping(fitted)
    side = CHIP_SIZE * scale  # the chip's square in the image, in pixels
    halvings, border = 0, 2
    while _halved(side, halvings + 1) > CHIP_SIZE:
        halvings += 1
        border = 2 * border + 2
    part, chip_to_part = _covered_part(image, chip_to_image, border)
    for _ in range(halvings):
        part = _pyramid_down(part)
        chip_to_part = chip_to_part / 2
        chip_to_part[:, 2] -= _PYRAMID_SHIFT
    if min(part.shape[:2]) < 2:  # the chip lies off the image (or on a sliver of it)
        return np.zeros((CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    # dlib truncates the interpolated value: warp in float, then floor.
    chip = cv2.warpAffine(
        part.astype(np.float32),
        chip_to_part,
        (CHIP_SIZE, CHIP_SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )
    truncated: np.ndarray = np.floor(chip).astype(np.uint8)
    truncated[~_inside(chip_to_part, part.shape[:2])] = 0
    return truncated


# Where dlib's 2:1 pyramid says a point goes (``pyramid_down<2>::point_down``): p / 2 less this.
_PYRAMID_SHIFT = (1.25, 0.75)
_KERNEL = (1, 4, 6, 4, 1)


def _halved(side: float, times: int) -> float:
    """A square's side after ``times`` halvings as dlib's pyramid maps its corners (its
    side counts both end pixels: (side - 1) / 2 + 1)."""
    for _ in range(times):
        side = (side - 1) / 2 + 1
    return side


def _pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib's 2:1 pyramid step on a colour image: a 5x5 binomial filter over the image's
    inside only, every other row and column, each sum truncated over 256."""
    height, width = image.shape[:2]
    if height <= 8 or width <= 8:
        return np.zeros((0, 0, 3), np.uint8)
    cols, rows = (width - 3) // 2, (height - 3) // 2
    # Summed in place in uint16 (at most 16 x 16 x 255 = 65,280), so a large face costs a
    # few copies of its region, not a stack of them.
    x = image.astype(np.uint16)
    across = np.zeros((height, cols, 3), np.uint16)
    for j, k in enumerate(_KERNEL):
        across += x[:, j : j + 2 * cols : 2] * np.uint16(k)
    down = np.zeros((rows, cols, 3), np.uint16)
    for j, k in enumerate(_KERNEL):
        down += across[j : j + 2 * rows : 2] * np.uint16(k)
    halved: np.ndarray = (down // 256).astype(np.uint8)
    return halved


def _dlib_mapping(fitted: np.ndarray) -> np.ndarray:
    """The map dlib samples with, from the fitted similarity: dlib keeps the image point of
    the chip's centre (75, 75) but spreads the chip's 150 pixel centres over a span of 150
    times the scale less one pixel, so pixel 74.5 lands there and the scale shrinks by
    (150 s - 1) / (149 s)."""
    linear, shift = fitted[:, :2], fitted[:, 2]
    scale = math.hypot(*linear[:, 0])
    centre = linear @ (CHIP_SIZE / 2, CHIP_SIZE / 2) + shift
    linear = linear * (CHIP_SIZE * scale - 1) / ((CHIP_SIZE - 1) * scale)
    middle = (CHIP_SIZE - 1) / 2
    return np.hstack([linear, (centre - linear @ (middle, middle))[:, None]])


def _covered_part(
    image: np.ndarray, chip_to_image: np.ndarray, border: int
) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` dlib filters and samples (the chip's corners' bounds, ``border``
    pixels more, within the image, rounded), and the chip's map into it."""
    last = CHIP_SIZE - 1
    corners = np.array([[0, 0, 1], [last, 0, 1], [0, last, 1], [last, last, 1]])
    covered = corners @ chip_to_image.T
    height, width = image.shape[:2]
    low = np.maximum(covered.min(axis=0) - border, 0)
    high = np.minimum(covered.max(axis=0) + border, (width - 1, height - 1))
    (x0, y0), (x1, y1) = np.floor(low + 0.5).astype(int), np.floor(high + 0.5).astype(int)
    moved = chip_to_image.copy()
    moved[:, 2] -= (x0, y0)
    return image[y0 : max(y0, y1 + 1), x0 : max(x0, x1 + 1)], moved


def _inside(chip_to_part: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Which chip pixels dlib fills: those whose four neighbours in the image all exist
    (the others it leaves black, where a warp would blend the image's edge with black)."""
    rows, cols = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE]
    x, y = np.tensordot(chip_to_part, np.stack([cols, rows, np.ones_like(rows)]), axes=1)
    height, width = shape
    inside: np.ndarray = (
        (x >= 0) & (y >= 0) & (np.floor(x) + 1 < width) & (np.floor(y) + 1 < height)
    )
    return inside
