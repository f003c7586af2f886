"""The training loop's runtime switches. `channels_last` is switched on only for CUDA by
`runtime.start`, `amp` (bf16 autocast) for CUDA and CPUs with native bf16; here the same code
runs on CPU with both forced on, so the GPU path is exercised without a GPU."""

import re

import numpy as np
import pytest
import torch

from pneumo.core import data, inference, loop, models, runtime, validation
from pneumo.tasks import train_unet


@pytest.mark.slow  # four training epochs of the full U-Net, two in bf16 emulated on the CPU
def test_bf16_autocast_and_channels_last_train_the_same_model_as_fp32():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32), dtype=np.uint8)
    masks = (rng.random((16, 32, 32)) > 0.9).astype(np.uint8)
    results = {}
    for amp, channels_last in [(False, False), (True, True)]:
        rt = runtime.Runtime(torch.device("cpu"), amp=amp, channels_last=channels_last)
        torch.manual_seed(0)
        model = rt.prepare(models.build_unet(1))
        assert model.encoder.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        criterion = validation.WeightedSum(validation.PIXEL_LOSSES["bce"](), 1.0, 1.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        order = data.shuffled(data.Arrays(images, masks, np.arange(16)), seed=0)
        feed = data.loader(data.Arrays(images, masks, np.arange(16)), 8, order=order, train=True, rt=rt)
        batch_fn = train_unet.batches(rt, torch.Generator().manual_seed(0))
        losses = [loop.train_one_epoch(rt.wrap(model), criterion, optimizer, feed, batch_fn, rt, e) for e in range(2)]
        outputs = inference.run_model(model, data.loader(data.Arrays(images, None, np.arange(16)), 8), rt)
        assert outputs.dtype == torch.float32 and outputs.shape == (16, 1, 32, 32)
        results[amp] = losses, outputs
    (fp32_losses, fp32_out), (bf16_losses, bf16_out) = results[False], results[True]
    np.testing.assert_allclose(bf16_losses, fp32_losses, rtol=0.02)  # bf16 rounding, not another model
    assert not np.allclose(bf16_losses, fp32_losses, rtol=1e-7)  # autocast really ran in bf16
    assert torch.corrcoef(torch.stack([fp32_out.flatten(), bf16_out.flatten()]))[0, 1] > 0.99


def test_runtime_uses_bf16_on_a_cpu_only_where_it_has_native_units():
    rt = runtime.start("cpu", amp=True, channels_last=True, local=runtime.LocalSettings(pin_memory=True))
    assert (rt.amp, rt.channels_last, rt.pin_memory) == (runtime.native_cpu_bf16(), False, False)
    assert not runtime.start("cpu", amp=False).amp


def test_a_training_stage_runtime_comes_from_params_and_the_environment(monkeypatch):
    """`runtime.from_params`: seeded by the run, the top-level params it names (and only those),
    restart behaviour from PNEUMO_RESUME."""
    p = {"device": "cpu", "deterministic": True, "amp": False, "channels_last": True, "compile": False}
    assert set(p) == set(runtime.PARAMS)
    monkeypatch.setenv("PNEUMO_RESUME", "0")
    rt = runtime.from_params(p, 7)
    assert torch.initial_seed() == 7 and np.random.get_state()[1][0] == np.random.RandomState(7).get_state()[1][0]
    assert rt.device.type == "cpu" and not rt.amp and not rt.channels_last and rt.resume is False
    with pytest.raises(KeyError):
        runtime.from_params({k: v for k, v in p.items() if k != "amp"}, 7)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a usable GPU: nothing to refuse")
def test_cuda_where_it_is_unusable_is_a_one_line_error_and_auto_warns(caplog):
    """`device: cuda` never falls back to the CPU in silence; `auto` says why it did."""
    problem = runtime.cuda_problem()
    assert problem and "\n" not in problem and torch.__version__ in problem
    for name in ("cuda", "cuda:1"):
        with pytest.raises(RuntimeError, match=f"device '{name}': CUDA is unusable here: torch ") as error:
            runtime.device_from(name)
        assert "\n" not in str(error.value)
    with caplog.at_level("INFO", logger="pneumo.core.runtime"):
        assert runtime.device_from("auto").type == "cpu"
        runtime.start("cpu", amp=True)
    assert f"device auto: running on the CPU ({problem})" in caplog.text
    assert re.search(r"runtime: cpu \(\d+ threads.*\), 1 process, (bf16 autocast|fp32), 0 loader workers", caplog.text)
