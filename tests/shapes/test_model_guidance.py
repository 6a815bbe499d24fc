"""Model-guidance pretraining target (pipelines/shapes/pretrain.py), by hand."""
import pytest
import torch

from mmgrpo.pipelines.shapes.pretrain import model_guidance_target


def test_hand_computed_target():
    u = torch.tensor([1.0, -2.0])
    v_c = torch.tensor([0.5, 0.0])
    v_u = torch.tensor([0.25, 1.0])
    # u + w (v_c - v_u) with w = 0.5: [1 + 0.5 * 0.25, -2 + 0.5 * (-1)] = [1.125, -2.5]
    assert torch.allclose(model_guidance_target(u, v_c, v_u, 0.5), torch.tensor([1.125, -2.5]))
    assert torch.equal(model_guidance_target(u, v_c, v_u, 0.0), u)


def test_fixed_point_is_cfg_at_one_over_one_minus_w():
    # regressing v_c onto the target repeatedly (E[u|c] = a, unconditional v_u = E[u] = b) converges to
    # CFG at scale 1 / (1 - w): b + (a - b) / (1 - w)
    a, b, w = torch.tensor(0.8), torch.tensor(0.2), 0.6
    v = b.clone()
    for _ in range(200):
        v = model_guidance_target(a, v, b, w)
    assert torch.allclose(v, b + (a - b) / (1 - w), atol=1e-6)


def test_target_carries_no_gradient_through_the_guidance_term():
    v_c = torch.tensor([0.5], requires_grad=True)
    t = model_guidance_target(torch.tensor([1.0]), v_c, torch.tensor([0.0]), 0.5)
    assert not t.requires_grad


@pytest.mark.parametrize("w", [-0.1, 1.0, 2.0])
def test_bad_weight_names_the_option(w):
    with pytest.raises(ValueError, match="--model-guidance"):
        model_guidance_target(torch.zeros(1), torch.zeros(1), torch.zeros(1), w)


def test_cli_refuses_a_bad_weight_before_any_work(tmp_path, capsys):
    from mmgrpo.pipelines.shapes.pretrain import main

    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "run"), "--model-guidance", "-0.1"])
    assert exc.value.code == 2 and "--model-guidance" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()                 # nothing rendered, nothing written
