"""FAMRegularizer: schedule, plain loop, MONAI SupervisedTrainer, and DistributedDataParallel equivalence."""

import gc
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.losses import DiceLoss
from monai.networks.nets import UNet

from fam_skull import FAMRegularizer
from fam_skull.fam.flatness import flatness_of_loss, resolve_layer

DICE = DiceLoss(to_onehot_y=True, softmax=True)


def tiny_unet():
    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(2, 4), strides=(2,), num_res_units=1).double()


def batch(n=4):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 1, 8, 8, 8, generator=g, dtype=torch.float64)
    return x, (x > 0.3).double()


def test_schedule_scales_lambda_and_warms_up():
    model = tiny_unet()
    reg = FAMRegularizer(model, lam=0.01, every=3, warmup_steps=2, seed=1)
    x, y = batch()
    active = []
    for _ in range(9):
        out = reg(DICE, x, y)
        active.append(out.kappa is not None)
        if out.kappa is None:
            assert out.loss is out.task_loss
        else:
            assert out.loss.item() == pytest.approx(out.task_loss.item() + 0.03 * out.kappa.item(), rel=1e-12)
    assert active == [False, False, True, False, False, True, False, False, True]
    unscaled = FAMRegularizer(tiny_unet(), lam=0.01, every=3, scale_lambda=False)
    assert unscaled.step_lambda == 0.01
    with pytest.raises(ValueError, match="lam"):
        FAMRegularizer(model, lam=-1.0)


def test_regularizer_gradient_is_task_plus_lambda_kappa():
    x, y = batch()
    model = tiny_unet()
    reg = FAMRegularizer(model, lam=0.5, seed=3, objective="kappa")
    out = reg(DICE, x, y)
    params = list(model.parameters())
    got = torch.autograd.grad(out.loss, params)
    # same probe drawn again from a fresh generator with the same seed
    loss = DICE(model(x), y)
    kappa = flatness_of_loss(loss, reg.ref, generator=torch.Generator().manual_seed(3))
    want = torch.autograd.grad(loss + 0.5 * kappa, params)
    assert kappa.item() == pytest.approx(out.kappa.item(), rel=1e-10)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert "Primitive" in type(model.model[1].submodule.conv.unit0.adn.N).__name__


def test_fused_norms_upstream_of_the_fam_layer_keep_the_gradient_exact():
    """After the first forward the encoder's norms are fused again; the FAM gradient still equals the one computed
    with every norm a primitive twin (float64), while fusing the decoder's norms too would change it."""
    import copy

    from fam_skull.fam.norms import decomposed_norms, restore_norms

    torch.manual_seed(0)
    model = UNet(3, 1, 2, channels=(2, 4, 8), strides=(2, 2), num_res_units=1).double()
    reference = copy.deepcopy(model)
    x, y = batch(2)
    reg = FAMRegularizer(model, lam=0.5, seed=3, objective="kappa")
    reg(DICE, x, y)  # the first forward: upstream norms fused from here on
    kinds = {name: type(m).__name__ for name, m in model.named_modules() if "Norm" in type(m).__name__}
    fused = sorted(name for name, kind in kinds.items() if not kind.startswith("Primitive"))
    assert fused == ["model.0.conv.unit0.adn.N", "model.1.submodule.0.conv.unit0.adn.N"]  # the encoder only
    assert len(kinds) - len(fused) == 4  # the bottleneck's norm and the decoder's stay twins
    state = reg.generator.get_state()
    out = reg(DICE, x, y)
    got = torch.autograd.grad(out.loss, list(model.parameters()))

    def full_twins_gradient(net):
        loss = DICE(net(x), y)
        kappa = flatness_of_loss(loss, resolve_layer(net, "bottleneck"), generator=torch.Generator().manual_seed(0).set_state(state))
        return torch.autograd.grad(loss + 0.5 * kappa, list(net.parameters()))

    with decomposed_norms(reference):
        want = full_twins_gradient(reference)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    restore_norms(reference)  # every norm fused: the third-order terms through the decoder go wrong
    wrong = full_twins_gradient(reference)
    assert max(float((a - b).abs().max()) for a, b in zip(wrong, want)) > 1e-6


def plain_loop(model, reg, x, y, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        reg(DICE, x, y).loss.backward()
        opt.step()
    return model


def test_monai_supervised_trainer_iteration():
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    x, y = batch()
    model = tiny_unet()
    reg = FAMRegularizer(model, lam=0.05, seed=0)
    kappas = []
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"image": x, "label": y}] * 2,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_function=DICE,
        iteration_update=reg.iteration,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: kappas.append(e.state.output["kappa"]))
    trainer.run()
    reference = tiny_unet()
    plain_loop(reference, FAMRegularizer(reference, lam=0.05, seed=0), x, y, 2)
    assert len(kappas) == 2 and all(k is not None for k in kappas)
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), tiny_unet().parameters()))


def _ddp_worker(rank, world, path, port, chunk):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = tiny_unet()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    reg = FAMRegularizer(ddp, lam=0.05, seed=0, chunk=chunk)  # chunk: passes in no_sync, averaged by the last backward
    x, y = batch()
    per = x.shape[0] // world
    plain_loop(ddp, reg, x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per], 3)
    torch.save(model.state_dict(), f"{path}/rank{rank}.pt")
    # free the DDP reducer before the process group: the other order hangs gloo's teardown at exit now and then
    del reg, ddp
    gc.collect()
    dist.destroy_process_group()


@pytest.mark.parametrize("chunk", [None, 1])
def test_ddp_ranks_agree_with_single_process(tmp_path, chunk):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.spawn(_ddp_worker, args=(2, str(tmp_path), port, chunk), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the 2 gloo ranks did not finish within 240 s")
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    single = tiny_unet()
    x, y = batch()
    plain_loop(single, FAMRegularizer(single, lam=0.05, seed=0), x, y, 3)
    initial = tiny_unet().state_dict()
    moved = False
    for key, value in single.state_dict().items():
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
        torch.testing.assert_close(rank0[key], value, rtol=1e-9, atol=1e-11)
        moved |= not torch.allclose(value, initial[key])
    assert moved


@pytest.mark.parametrize(
    ("objective", "reduction", "n", "chunk"),
    [("kappa", "mean", 4, 1), ("kappa", "sum", 3, 2), ("fisher", "mean", 3, 2), ("fisher", "sum", 4, 3)],
)
def test_chunked_passes_give_the_batch_gradient(objective, reduction, n, chunk):
    x, y = batch(n)
    loss_fn = DiceLoss(to_onehot_y=True, softmax=True, reduction=reduction)
    grads = {}
    for size in (None, chunk):
        model = tiny_unet()
        reg = FAMRegularizer(model, lam=0.5, seed=3, objective=objective, chunk=size, loss_reduction=reduction)
        out = reg(loss_fn, x, y)
        out.loss.backward()
        assert reg.step == 1
        grads[size] = (out.kappa.detach(), out.task_loss.detach(), [p.grad.clone() for p in model.parameters()], reg.generator.get_state())
    (k0, l0, g0, s0), (k1, l1, g1, s1) = grads[None], grads[chunk]
    assert torch.equal(s0, s1)  # the probe stream goes on as after one pass: later steps draw the same probes
    torch.testing.assert_close(k1, k0, rtol=1e-9, atol=0)
    torch.testing.assert_close(l1, l0, rtol=1e-12, atol=0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_chunked_passes_refuse_what_does_not_add_up():
    model = tiny_unet()
    with pytest.raises(ValueError, match="kappa and fisher"):
        FAMRegularizer(model, objective="published", chunk=1)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        FAMRegularizer(model, chunk=0)
    coupled = UNet(3, 1, 2, channels=(2, 4), strides=(2,), num_res_units=1, norm="batch").double()
    with pytest.raises(ValueError, match=r"BatchNorm3d\) couples the samples"):
        FAMRegularizer(coupled, chunk=1)
    # a loss over the whole batch (Dice of the batch's voxels pooled) is no per-sample mean: found at the first step
    reg = FAMRegularizer(model, lam=0.5, objective="kappa", chunk=2)
    x, y = batch(4)
    with pytest.raises(ValueError, match=r"is not the mean of its chunks' losses"):
        reg(DiceLoss(to_onehot_y=True, softmax=True, batch=True), x, y)
