"""A silhouette term: the fitted body against the estimator's person mask, by distance transforms.

Two one-sided, robust distances, both in units of the person's size in the image:
- inside: every projected body vertex should fall on the mask; its cost is the distance from where it
  lands to the nearest mask pixel (a distance transform of the mask's outside, sampled bilinearly, so
  the term is differentiable in the vertices);
- coverage: every point of the mask's outline should have a body vertex near it (a chamfer distance
  from sampled outline points to the nearest projected vertex). Clothes and hair widen the mask
  beyond the body, so this side weighs less.
Vertices outside the image and outline points on the image's border (where the frame, not the body,
ends the mask) are left out. A Geman-McClure function caps each point's cost, so a limb hidden behind
an object (missing from the mask) pulls only a little.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


class SilhouetteTerm:
    """Cost of projected vertices against one person mask.

    Args:
        mask: [H, W] uint8 person mask (255 = person) in the image's pixels.
        work_side: the longer side of the distance transform (the mask is reduced to it).
        outline_points: how many outline points the coverage side samples.
        coverage_weight: weight of the coverage side relative to the inside side.
        robust_scale: Geman-McClure scale, as a share of the person's size.
    """

    def __init__(self, mask: np.ndarray, *, work_side: int = 256, outline_points: int = 200, coverage_weight: float = 0.3, robust_scale: float = 0.05) -> None:
        H, W = mask.shape
        self.image_size = (H, W)
        self.scale = min(1.0, work_side / max(H, W))  # work pixels per image pixel
        h, w = max(8, round(H * self.scale)), max(8, round(W * self.scale))
        small = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA) > 127
        self.valid = bool(small.sum() >= 16)
        ys, xs = np.nonzero(small)
        extent = max(np.ptp(xs), np.ptp(ys), 1) if self.valid else 1
        self.size = float(extent) / self.scale  # person's size in image pixels
        outside = cv2.distanceTransform((~small).astype(np.uint8), cv2.DIST_L2, 5)  # 0 on the mask
        self.distance = torch.from_numpy(outside / extent).float()[None, None]  # [1, 1, h, w], person-size units
        self.work_size = (h, w)
        contours, _ = cv2.findContours(small.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        outline = np.concatenate([c[:, 0] for c in contours]) if contours else np.zeros((0, 2), np.int32)
        on_border = (outline[:, 0] <= 1) | (outline[:, 1] <= 1) | (outline[:, 0] >= w - 2) | (outline[:, 1] >= h - 2)
        outline = outline[~on_border]
        if len(outline) > outline_points:
            outline = outline[np.linspace(0, len(outline) - 1, outline_points).astype(int)]
        self.outline = torch.from_numpy((outline + 0.5) / self.scale).float()  # [P, 2] image pixels
        self.coverage_weight = coverage_weight
        self.sigma2 = robust_scale**2

    def __call__(self, uv: torch.Tensor) -> torch.Tensor:
        """Cost of projected vertices uv [T, V, 2] (image pixels): [T]."""
        T = uv.shape[0]
        if not self.valid:
            return uv.new_zeros(T)
        H, W = self.image_size
        inside_image = (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
        grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], dim=-1)  # [T, V, 2] in -1..1
        d = torch.nn.functional.grid_sample(self.distance.expand(T, -1, -1, -1), grid[:, None], mode="bilinear", padding_mode="border", align_corners=False)[:, 0, 0]
        d2 = d.square()
        inside = (d2 * self.sigma2 / (d2 + self.sigma2) * inside_image).sum(1) / (self.sigma2 * inside_image.sum(1).clamp_min(1))
        if len(self.outline) == 0:
            return inside
        nearest = torch.cdist(self.outline[None].expand(T, -1, -1), uv).min(dim=2).values / self.size  # [T, P]
        n2 = nearest.square()
        coverage = (n2 * self.sigma2 / (n2 + self.sigma2)).mean(1) / self.sigma2
        return inside + self.coverage_weight * coverage
