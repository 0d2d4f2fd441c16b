"""Body regions that touch objects (buttocks, back, chest, hands, soles, feet, toes, mouth, the back of
the head), as vertex sets
of any studio body model, found from its part labels and its T-pose surface: no model is named.

In the T-pose (Y up, facing +Z, left at +X) the back of the thighs and the buttocks face -Z (down once
seated), the back faces -Z, the soles are the lowest foot vertices, and the mouth lies just below the
nose landmark.
"""

from __future__ import annotations

import functools

import torch

from studio.body import BODY_PART_NAMES, JOINT_INDEX
from studio.render import vertex_normals

REGION_NAMES = (
    "buttocks", "back", "chest", "left_hand", "right_hand", "left_sole", "right_sole", "left_foot", "right_foot", "mouth",
    "left_forearm", "right_forearm", "right_toes", "head_back",
)  # fmt: skip


def _parts(labels: torch.Tensor, *names: str) -> torch.Tensor:
    ids = torch.tensor([BODY_PART_NAMES.index(n) for n in names])
    return torch.isin(labels, ids)


@functools.lru_cache(maxsize=4)
def body_regions(body_model) -> dict[str, torch.Tensor]:
    """Region name -> vertex indices [K] (long) of ``body_model`` (see ``REGION_NAMES``)."""
    with torch.no_grad():
        rest = body_model({"transl": torch.zeros(1, 3)})
    v = rest.vertices[0].cpu()
    n = vertex_normals(rest.vertices.cpu(), body_model.faces.cpu().long())[0]
    labels = body_model.part_labels.cpu()
    joints = rest.joints[0].cpu()
    hip_y = float(joints[JOINT_INDEX["left_hip"], 1])
    regions = {
        "buttocks": _parts(labels, "pelvis", "left_thigh", "right_thigh") & (n[:, 2] < -0.35) & (v[:, 1] < hip_y + 0.06),
        "back": _parts(labels, "lower_spine", "mid_spine", "chest") & (n[:, 2] < -0.5),
        "chest": _parts(labels, "chest", "mid_spine") & (n[:, 2] > 0.5),
    }
    for side in ("left", "right"):
        foot = _parts(labels, f"{side}_foot", f"{side}_toes")
        lowest = float(v[foot, 1].min())
        regions[f"{side}_sole"] = foot & (v[:, 1] < lowest + 0.015) & (n[:, 1] < -0.5)
        regions[f"{side}_foot"] = foot
        regions[f"{side}_hand"] = _parts(labels, f"{side}_hand")
        regions[f"{side}_forearm"] = _parts(labels, f"{side}_forearm")
    regions["right_toes"] = (
        _parts(labels, "right_toes", "right_foot") & (n[:, 2] > 0.3) & (v[:, 1] < float(v[regions["right_foot"], 1].min()) + 0.06)
    )
    regions["head_back"] = _parts(labels, "head") & (n[:, 2] < -0.5)
    nose = joints[JOINT_INDEX["nose"]]
    mouth = nose + torch.tensor([0.0, -0.045, -0.005])
    regions["mouth"] = _parts(labels, "head") & ((v - mouth).norm(dim=-1) < 0.03) & (n[:, 2] > 0.3)
    out = {}
    for name in REGION_NAMES:
        ids = torch.nonzero(regions[name]).flatten()
        if ids.numel() == 0:
            raise ValueError(f"the {body_model.name} body model has no vertices for the '{name}' region")
        out[name] = ids
    return out


__all__ = ["REGION_NAMES", "body_regions"]
