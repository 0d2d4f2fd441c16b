"""Train TransHuman on multi-view data studio generates from its own avatars (no licensed scans),
with accelerate, from random weights or fine-tuning released/studio weights.

    python -m pipelines.transhuman.train generate --photos assets/media/ref_sitting.jpg --motions assets/motions/walk.npz --output data/transhuman
    python -m pipelines.transhuman.train train --data data/transhuman --output runs/transhuman --references 3 [--init WEIGHTS] [--model-size small]
    accelerate launch -m pipelines.transhuman.train train --data data/transhuman --output runs/transhuman   # several GPUs or machines

``generate`` writes ZJU-MoCap's folder layout (``Camera_BX/``, ``mask/``, and with ``--body smpl``
``annots.npy`` and ``params/``). ``train`` writes ``OUTPUT/transhuman/transhuman.safetensors`` (the
official key names), ``model_config.json`` and ``clusters.npy``: ``--weights OUTPUT`` for ``studio novel-view``.

The objective is the colour's MSE on random rays (half inside the person's box); TransHuman's LPIPS
term on patches is left out (it needs VGG weights). The encoder's BatchNorms use batch statistics, as
in the official training and evaluation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from studio.nerf import (
    MultiViewDataset,
    PosedBodyCache,
    Sampling,
    TrainingSample,
    body_params,
    official_intrinsics,
    pixel_rays,
    reference_view,
    render_rays,
    script_main,
    target_rays,
    train_config_from,
    train_nerf,
)

from .model import MODEL_SIZES, TransHumanNet, build_net
from .pipeline import TransHumanConfig, encode_photos, photo_visibility, template_clusters, transhuman_field
from .weights import load_net, read_clusters, save_net


class TransHumanTrainingModel(nn.Module):
    """``forward(sample, rng)`` -> the colour loss on a random ray batch of the sample's target view."""

    def __init__(self, net: TransHumanNet, body_model: Any, *, rays: int = 1024, labels: torch.Tensor | None = None, config: TransHumanConfig | None = None) -> None:
        super().__init__()
        self.net = net
        for dead in (net.xyzc_net, net.encoder.model.layer3, net.encoder.model.layer4):  # held by the released file, never run
            dead.requires_grad_(False)
        net.ViT.cls_token.requires_grad_(False)
        net.ViT.mask_token.requires_grad_(False)
        self.body_model = body_model
        self.rays = rays
        self.config = dataclasses.replace(config or TransHumanConfig(), device="cpu")
        self.clusters = template_clusters(body_model, net.config.num_clusters, labels)
        self.bodies = PosedBodyCache(body_model)
        self._views: dict = {}  # (subject, pose, view) -> (posed body, visible vertices)

    def _known(self, sample: TrainingSample):
        def known(i: int):
            ref = sample.references[i]
            if ref.key not in self._views:
                view = reference_view(ref.image, ref.mask, ref.condition, size=self.config.reference_size, body_model=self.body_model)
                self._views[ref.key] = (self.bodies(body_params(ref.condition)), photo_visibility(view, ref.condition, self.body_model))
            return self._views[ref.key]

        return known

    def forward(self, sample: TrainingSample, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        device = next(self.net.parameters()).device
        photos = [(r.image, r.mask, r.condition) for r in sample.references]
        reference, ref_bodies = encode_photos(
            self.net, photos, body_model=self.body_model, clusters=self.clusters, config=self.config, device=device, known=self._known(sample)
        )
        target = self.bodies(body_params(sample.target.condition)).to(device)
        field = transhuman_field(self.net, reference, target, ref_bodies, self.clusters, skip_empty=False)
        pix, colour, _ = target_rays(sample.target, self.rays, rng)
        cam = sample.target.camera
        origins, directions = pixel_rays(official_intrinsics(cam.K[0]), cam.extrinsics[0], cam.image_size)
        out = render_rays(
            origins[pix].to(device), directions[pix].to(device), target.vertices, field,
            sampling=Sampling(self.config.samples, self.config.radius, (0.0, 0.05, 0.0)), jitter=torch.Generator().manual_seed(int(rng.integers(1 << 31))),
        )  # fmt: skip
        mse = ((out.rgb - colour.to(device)) ** 2).mean()
        return {"loss": mse, "mse": mse}


def train(args: Any) -> Path:
    """``train``: build or load the network, train it on the dataset, write the weights."""
    from studio.body import load_body_model

    model = load_body_model(args.body)
    labels = None
    if args.init:
        net, _ = load_net(Path(args.init))
        labels = read_clusters(Path(args.init), model.num_vertices, net.config.num_clusters)
        if net.config.body_model != model.name:
            net.config = dataclasses.replace(net.config, body_model=model.name)
    else:
        net = build_net(dataclasses.replace(MODEL_SIZES[args.model_size], body_model=model.name), seed=args.seed)
    dataset = MultiViewDataset(args.data, layout="transhuman", body_model=model)
    output = Path(args.output) / "transhuman"
    trainer = TransHumanTrainingModel(net, model, rays=args.rays, labels=labels)
    history = train_nerf(trainer, dataset, config=train_config_from(args), save=lambda m: save_net(output, m.net, m.clusters.labels))
    print(f"trained {len(history)} steps; last loss {history[-1]['loss']:.4f}")
    return output


def main(argv: list[str] | None = None) -> int:
    return script_main(argv, layout="transhuman", description=__doc__.splitlines()[0], train=train, sizes=tuple(MODEL_SIZES))


if __name__ == "__main__":
    raise SystemExit(main())
