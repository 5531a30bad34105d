"""The size Qwen-VL's processor gives an image under a pixel budget, and the size the
gateway shrinks an image to (the same, when the processor would shrink it at all)."""

from __future__ import annotations

import math

from vlserve.errors import ErrorKind, ServiceError
from vlserve.media.policy import PixelBudget

MAX_ASPECT_RATIO = 200  # Qwen-VL's processor refuses anything longer and thinner


def smart_resize(height: int, width: int, budget: PixelBudget) -> tuple[int, int]:
    """Qwen-VL's processor resize rule (transformers' qwen2_vl `smart_resize`), same rounding."""
    factor = budget.factor
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ServiceError(ErrorKind.INVALID_IMAGE, f"The image is {width}x{height}; the model accepts "
                           f"aspect ratios up to {MAX_ASPECT_RATIO}:1.")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > budget.max_pixels:
        beta = math.sqrt((height * width) / budget.max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < budget.min_pixels:
        beta = math.sqrt(budget.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def visual_tokens(height: int, width: int, budget: PixelBudget) -> int:
    """The tokens the model spends on an image of this (upright) size under the budget."""
    target = smart_resize(height, width, budget)
    return target[0] * target[1] // (budget.factor * budget.factor)


def _within_aspect_limit(h_bar: int, w_bar: int, factor: int) -> tuple[int, int]:
    """Rounding the short side down can push a long, thin image past 200:1, which the
    processor refuses when it is handed our resized image: shorten the long side to fit."""
    longest = MAX_ASPECT_RATIO * min(h_bar, w_bar) // factor * factor
    if h_bar > w_bar:
        return min(h_bar, longest), w_bar
    return h_bar, min(w_bar, longest)


def downscale_target(height: int, width: int, budget: PixelBudget) -> tuple[int, int] | None:
    """The size to resize to on our side, or None when the processor would not shrink it.

    Only shrinking saves anything: an image the processor would enlarge or merely round
    to a multiple of the factor is cheaper to send as it is.
    """
    target = smart_resize(height, width, budget)
    factor = budget.factor
    over_budget = round(height / factor) * factor * round(width / factor) * factor > budget.max_pixels
    return _within_aspect_limit(*target, factor) if over_budget else None
