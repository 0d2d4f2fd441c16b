"""Train SHERF on multi-view data studio generates from its own avatars (no licensed scans), with
accelerate, from random weights or fine-tuning released/studio weights.

    python -m pipelines.sherf.train generate --photos assets/media/ref_sitting.jpg --motions assets/motions/walk.npz --output data/sherf
    python -m pipelines.sherf.train train --data data/sherf --output runs/sherf [--init WEIGHTS] [--model-size small] [--steps 2000]
    accelerate launch -m pipelines.sherf.train train --data data/sherf --output runs/sherf   # several GPUs or machines

``generate`` writes RenderPeople's folder layout (``img/cameraXXXX/``, ``mask/``, ``cameras.json``, and
SMPL parameter files with ``--body smpl``). ``train`` writes ``OUTPUT/sherf/sherf.safetensors`` (the
official key names) and ``model_config.json``: ``--weights OUTPUT`` for ``studio novel-view``.

The objective is SHERF's 100 x MSE of the colour plus 10 x MSE of the opacity against the mask, on
random rays (half inside the person's box); its SSIM and LPIPS terms, which need image patches and
VGG weights, are left out.
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
    canonical_body,
    official_intrinsics,
    pixel_rays,
    render_rays,
    script_main,
    target_rays,
    train_config_from,
    train_nerf,
    VertexGrid,
)

from .model import MODEL_SIZES, SherfGenerator, build_generator
from .pipeline import SherfConfig, encode_photo, sherf_field
from .weights import load_generator, save_generator


class SherfTrainingModel(nn.Module):
    """``forward(sample, rng)`` -> SHERF's loss terms on a random ray batch of the sample's target view."""

    def __init__(self, generator: SherfGenerator, body_model: Any, *, rays: int = 1024, config: SherfConfig | None = None) -> None:
        super().__init__()
        self.generator = generator
        for dead in (generator.superresolution, generator.encoder_2d.backbone.fc, generator.encoder_2d_feature.backbone.layer2,
                     generator.encoder_2d_feature.backbone.layer3, generator.encoder_2d_feature.backbone.layer4, generator.encoder_2d_feature.backbone.fc,
                     generator.renderer.encoder_3d.down3, generator.renderer.encoder_3d.conv4):  # fmt: skip
            dead.requires_grad_(False)  # held by the released files, never run
        self.body_model = body_model
        self.rays = rays
        self.config = dataclasses.replace(config or SherfConfig(), noise="random", device="cpu")
        self.canonical = canonical_body(body_model)
        self.grid = VertexGrid(self.canonical.vertices, cell=self.config.radius)
        self.bodies = PosedBodyCache(body_model)

    def forward(self, sample: TrainingSample, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        device = next(self.generator.parameters()).device
        ref = sample.references[0]
        seed = int(rng.integers(1 << 31))
        ref_body = self.bodies(body_params(ref.condition))
        reference = encode_photo(
            self.generator, ref.image, ref.mask, ref.condition, body_model=self.body_model, canonical=self.canonical, config=self.config, seed=seed,
            device=device, body=ref_body,
        )  # fmt: skip
        target = self.bodies(body_params(sample.target.condition)).to(device)
        ref_body = ref_body.to(device)
        field = sherf_field(self.generator, reference, target, self.canonical.to(device), ref_body, self.grid)
        pix, colour, mask = target_rays(sample.target, self.rays, rng)
        cam = sample.target.camera
        origins, directions = pixel_rays(official_intrinsics(cam.K[0]), cam.extrinsics[0], cam.image_size)
        out = render_rays(
            origins[pix].to(device), directions[pix].to(device), target.vertices, field,
            sampling=Sampling(self.config.samples, self.config.radius, (0.05, 0.05, 0.05)), jitter=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        mse = ((out.rgb - colour.to(device)) ** 2).mean()
        opacity = ((out.opacity - mask.to(device)) ** 2).mean()
        return {"loss": 100.0 * mse + 10.0 * opacity, "mse": mse, "opacity": opacity}


def train(args: Any) -> Path:
    """``train``: build or load the generator, train it on the dataset, write the weights."""
    from studio.body import load_body_model

    model = load_body_model(args.body)
    if args.init:
        generator, _ = load_generator(Path(args.init))
        if generator.config.body_model != model.name:
            generator.config = dataclasses.replace(generator.config, body_model=model.name)
    else:
        generator = build_generator(dataclasses.replace(MODEL_SIZES[args.model_size], body_model=model.name), seed=args.seed)
    dataset = MultiViewDataset(args.data, layout="sherf", body_model=model)
    output = Path(args.output) / "sherf"
    trainer = SherfTrainingModel(generator, model, rays=args.rays)
    history = train_nerf(trainer, dataset, config=train_config_from(args), save=lambda m: save_generator(output, m.generator))
    print(f"trained {len(history)} steps; last loss {history[-1]['loss']:.4f}")
    return output


def main(argv: list[str] | None = None) -> int:
    return script_main(argv, layout="sherf", description=__doc__.splitlines()[0], train=train, sizes=tuple(MODEL_SIZES))


if __name__ == "__main__":
    raise SystemExit(main())
