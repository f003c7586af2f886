"""pneumo.core.inference.load_unet: a checkpoint is refused when the pixel scaling it was
trained on differs from the one pneumo.core.data applies; older checkpoints without that
record still load; batched inference over a loader (`iter_model`, `run_model`), which needs no
training code."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.core import data, inference, models

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def unet_state():
    torch.manual_seed(0)
    return models.build_unet(1).state_dict()


def save(path, state, **meta):
    models.save_checkpoint(path, state, kind="unet", encoder=models.ENCODER, in_channels=1, **meta)
    return path


def test_input_scaling_is_what_data_to_input_applies():
    assert data.INPUT_SCALING == {"mean": data.MEAN, "std": data.STD, "of": "pixel / 255"}
    images = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    scaled = (images.float() / 255 - data.INPUT_SCALING["mean"]) / data.INPUT_SCALING["std"]
    assert torch.equal(data.to_input(images)[:, 0], scaled)


def test_a_checkpoint_with_other_input_scaling_is_refused(unet_state, tmp_path):
    other = {"mean": 0.485, "std": 0.229, "of": "pixel / 255"}
    path = save(tmp_path / "imagenet-scaled.safetensors", unet_state, input_scaling=other)
    with pytest.raises(ValueError) as err:
        inference.load_unet(path, CPU)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    ours = json.dumps(data.INPUT_SCALING, sort_keys=True)
    assert f"input scaling {json.dumps(other, sort_keys=True)}, but pneumo.core.data applies {ours}" in message


def test_matching_and_unrecorded_scaling_load(unet_state, tmp_path):
    for name, meta in (("current", {"input_scaling": data.INPUT_SCALING}), ("old", {})):
        model, meta_back = inference.load_unet(save(tmp_path / f"{name}.safetensors", unet_state, **meta), CPU)
        assert meta_back.get("input_scaling", {}) == meta.get("input_scaling", {})
        assert torch.equal(model.state_dict()["segmentation_head.0.weight"], unet_state["segmentation_head.0.weight"])


def test_iter_model_yields_each_batch_in_the_loaders_order_and_run_model_joins_them():
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    feed = data.loader(data.Arrays(images, None, np.array([4, 0, 2, 1, 3])), 2)

    def means(model, inputs):
        return model(inputs).mean(dim=(1, 2, 3))

    batches = list(inference.iter_model(torch.nn.Identity(), feed, CPU, means))
    assert [len(b) for b in batches] == [2, 2, 1]
    expected = data.to_input(torch.from_numpy(images[[4, 0, 2, 1, 3]])).mean(dim=(1, 2, 3))
    assert torch.equal(torch.cat(batches), expected)
    assert torch.equal(inference.run_model(torch.nn.Identity(), feed, CPU, means), expected)


def test_inference_does_not_import_the_training_loop():
    """Loading and running models needs no training code: core.inference imports no core.loop."""
    imported = set()
    for node in ast.walk(ast.parse(Path(inference.__file__).read_text())):
        if isinstance(node, ast.ImportFrom):
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert "pneumo.core.data" in imported and "pneumo.core.loop" not in imported
