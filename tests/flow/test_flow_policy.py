"""FlowPolicy over a tiny real SD3 pipeline: LoRA, reference KL, schedules, export to diffusers, bad input."""

import pytest
import torch

from mmgrpo.modalities.flow.policy import FlowPolicy
from mmgrpo.modalities.flow.sd3 import SD3Cond
from mmgrpo.modalities.flow.tiny import tiny_sd3_pipeline
from mmgrpo.rollout import SampleBatch

from .test_contract import TINY, make_batch, make_policy, perturb_lora


def gradient_step(policy, rollout, lr=0.05):
    """One Adam step pushing up the log-prob of the recorded trajectory (a GRPO step with advantage +1)."""
    opt = torch.optim.Adam(policy.trainable_parameters(), lr=lr)
    loss = -policy.log_prob(rollout, slice(0, rollout.num_positions)).log_probs.mean()
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_only_lora_parameters_are_trainable():
    policy = make_policy()
    trainable = {n for n, p in policy.pipe.transformer.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # every default target got a LoRA (the single block is context_pre_only, so it has no to_add_out)
    targets = {n.split(".lora_")[0].split("attn.")[-1] for n in trainable}
    assert targets == {"to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj"}
    assert all(p.dtype == torch.float32 for p in policy.trainable_parameters())
    for module in (policy.pipe.vae, policy.pipe.text_encoder, policy.pipe.text_encoder_2):
        assert not any(p.requires_grad for p in module.parameters())
    assert len(policy.trainable_parameters()) == len(trainable)
    # rank and scale from the config
    lora_a = next(p for n, p in policy.transformer.named_parameters() if n.endswith("to_q.lora_A.default.weight"))
    assert lora_a.shape[0] == TINY["lora_rank"]


def test_gradient_step_changes_log_probs_and_reference_kl():
    policy = make_policy(guidance_scale=4.5)
    rollout = policy.sample(make_batch())
    # LoRA B = 0 at init: the policy is the reference, KL exactly 0
    kl0 = policy.reference_kl(rollout, slice(0, 3))
    assert kl0.shape == (6, 3) and torch.equal(kl0, torch.zeros(6, 3))
    gradient_step(policy, rollout)
    with torch.no_grad():
        logp = policy.log_prob(rollout, slice(0, 3)).log_probs
    assert (logp - rollout.log_probs).abs().max() > 1e-4
    # the step increased the objective it optimized
    assert logp.mean() > rollout.log_probs.mean()
    kl1 = policy.reference_kl(rollout, slice(1, 3))
    assert kl1.shape == (6, 2) and (kl1 > 0).all()


def test_reference_kl_matches_hand_formula_and_reuses_log_prob_means():
    policy = make_policy(sde="flow_grpo", noise_level=0.7)
    perturb_lora(policy)
    rollout = policy.sample(make_batch())
    mb = rollout.select(torch.tensor([4, 1]))
    fresh = policy.reference_kl(mb, slice(1, 2))                     # policy forward recomputed
    out = policy.log_prob(mb, slice(1, 2))
    reused = policy.reference_kl(mb, slice(1, 2), out)               # reuses log_prob's means (out.aux)
    assert torch.allclose(fresh, reused, atol=1e-7)
    # by hand: mu from the policy, mu_ref with the LoRA disabled, std_t = a * sqrt(s / (1 - s))
    st = mb.state
    s = st.sigmas[:, 1]
    x = st.latents[:, 1]
    with torch.no_grad():
        v = policy._velocity(x, s, policy._model_cond(st.cond), str)
        with policy.reference():
            v_ref = policy._velocity(x, s, policy._model_cond(st.cond), str)
    dt = (st.sigmas_next[:, 1] - s).view(-1, 1, 1, 1)
    s4 = s.view(-1, 1, 1, 1)
    std_t = 0.7 * torch.sqrt(s4 / (1 - s4))
    # mean is affine in v with coefficient (1 + std_t^2 (1-s) / (2s)) dt
    dmu = (v - v_ref) * (1 + std_t**2 * (1 - s4) / (2 * s4)) * dt
    expected = (dmu**2 / (2 * std_t**2)).mean(dim=(1, 2, 3))
    assert torch.allclose(fresh[:, 0], expected, rtol=1e-4, atol=1e-10)


def test_window_schedule_trains_only_the_shared_window():
    policy = make_policy(schedule="window", window_size=2, num_steps=6, shared_group_noise=True)
    batch = make_batch(prompts=("a red circle", "a blue square", "a green star", "one cat"), group_size=2)
    rollout = policy.sample(batch)
    steps = rollout.state.steps                                        # [N, 2]
    assert rollout.log_probs.shape == (8, 2)
    assert torch.equal(steps[:, 1], steps[:, 0] + 1)
    for g in range(4):
        members = steps[rollout.group_ids == g]
        assert torch.equal(members, members[:1].expand_as(members))
    # positions replay the recorded steps: sigma of position j is the scheduler sigma of its step
    sig = policy.sigmas(6)
    assert torch.equal(rollout.state.sigmas, sig[steps])
    # before the window the trajectory is the deterministic ODE: with shared initial noise, a group's members
    # enter the window on the same latent, and only the window's SDE noise separates them
    x_in, x_out = rollout.state.latents[:, 0], rollout.state.next_latents[:, 0]
    for g in range(4):
        a, b = (rollout.group_ids == g).nonzero().squeeze(1).tolist()
        assert torch.equal(x_in[a], x_in[b]) and not torch.equal(x_out[a], x_out[b])
    assert (steps[:, 1] <= 4).all()                                    # the last step (index 5) stays ODE


def test_shared_group_noise_gives_equal_initial_latents():
    policy = make_policy(shared_group_noise=True)
    rollout = policy.sample(make_batch(group_size=3))
    x0 = rollout.state.latents[:, 0]                                   # step 0 of schedule 'all' = initial noise
    assert torch.equal(x0[0], x0[1]) and torch.equal(x0[1], x0[2]) and torch.equal(x0[3], x0[5])
    assert not torch.equal(x0[0], x0[3])
    # members still differ: the SDE noise is per sample
    assert not torch.equal(rollout.state.final_latents[0], rollout.state.final_latents[1])
    own = make_policy(shared_group_noise=False).sample(make_batch(group_size=3)).state.latents[:, 0]
    assert not torch.equal(own[0], own[1])
    # evaluation images of one prompt (its "group" of seeds) do not share noise: each seed is its own image
    ev = policy.sample(make_batch(group_size=3), evaluate=True).state.final_latents
    assert not torch.equal(ev[0], ev[1])


def test_samples_depend_on_their_seed_only():
    # the same seed gives the same image whatever batch it is sampled in (per-sample generators)
    policy = make_policy()
    full = policy.sample(make_batch())
    b = make_batch()
    part = policy.sample(SampleBatch(conds=b.conds[2:4], group_ids=b.group_ids[2:4], seeds=b.seeds[2:4],
                                     group_seeds=b.group_seeds[2:4]))
    assert torch.allclose(full.outputs[2:4], part.outputs, atol=1e-6)
    assert torch.allclose(full.log_probs[2:4], part.log_probs, atol=1e-6)


def test_evaluate_mode_equals_the_stock_pipeline_call():
    # ODE sampling with the pipeline's own sigmas, CFG and VAE scaling must reproduce StableDiffusion3Pipeline.__call__
    policy = make_policy(guidance_scale=3.0, eval_num_steps=3)
    batch = make_batch(group_size=1)
    rollout = policy.sample(batch, evaluate=True)
    assert rollout.log_probs.shape == (2, 0)
    stock = tiny_sd3_pipeline(seed=0)
    init = torch.stack([torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(int(s))) for s in batch.seeds])
    images = stock(list(batch.conds), latents=init, num_inference_steps=3, guidance_scale=3.0, height=16, width=16,
                   output_type="pt", max_sequence_length=8).images
    assert torch.allclose(rollout.outputs, images, atol=1e-5)


def test_save_pretrained_loads_in_a_stock_pipeline(tmp_path):
    policy = make_policy()
    gradient_step(policy, policy.sample(make_batch()), lr=0.1)
    policy.save_pretrained(str(tmp_path))
    stock = tiny_sd3_pipeline(seed=0)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = policy.spec.encode(["a red circle", "one cat"], cfg=False, device="cpu")
    sigma = torch.tensor([0.8, 0.4])

    def velocity(transformer):
        with torch.no_grad():
            return policy.spec.predict_velocity(transformer, x, sigma, cond)

    before = velocity(stock.transformer)
    call_kwargs = dict(prompt="a red circle", num_inference_steps=2, height=16, width=16, output_type="pt",
                       max_sequence_length=8)
    image_before = stock(generator=torch.Generator().manual_seed(0), **call_kwargs).images
    stock.load_lora_weights(str(tmp_path))                             # diffusers' own loader
    after = velocity(stock.transformer)
    image_after = stock(generator=torch.Generator().manual_seed(0), **call_kwargs).images
    assert (after - before).abs().max() > 1e-4
    assert (image_after - image_before).abs().max() > 1e-4
    # the loaded LoRA is ours, scale alpha / r included (metadata), not merely "some change"
    assert torch.allclose(after, velocity(policy.transformer), atol=1e-5)


def test_lora_path_and_trainable_state_round_trip(tmp_path):
    policy = make_policy()
    perturb_lora(policy)
    policy.save_pretrained(str(tmp_path))
    sd = policy.state_dict_trainable()
    loaded = make_policy(lora_path=str(tmp_path))
    sd2 = loaded.state_dict_trainable()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    fresh = make_policy()
    fresh.load_state_dict_trainable(sd)
    assert all(torch.equal(sd[k], v) for k, v in fresh.state_dict_trainable().items())
    with pytest.raises(ValueError, match="does not fit lora_rank=2"):
        make_policy(lora_path=str(tmp_path), lora_rank=2)


def test_sd3_cond_select_and_concat():
    cond = SD3Cond(torch.arange(12.).view(3, 2, 2), torch.arange(6.).view(3, 2), None, None)
    parts = [cond.select(torch.tensor([2])), cond.select(torch.tensor([0, 1]))]
    both = SD3Cond.concat(parts)
    assert torch.equal(both.prompt_embeds, cond.prompt_embeds[[2, 0, 1]]) and both.negative_prompt_embeds is None
    with pytest.raises(ValueError, match="needs negative prompt embeddings"):
        cond.for_cfg()


# ------------------------------------------------------------------ bad input
def test_unknown_sde_and_schedule_are_listed():
    with pytest.raises(KeyError, match="unknown flow SDE step 'sage'; valid names: cps, dance, flow_grpo, ode"):
        make_policy(sde="sage")
    with pytest.raises(KeyError, match="unknown flow sampling schedule 'tree'; valid names: all, window"):
        make_policy(schedule="tree")


def test_guidance_with_cfg_free_training_is_a_contradiction():
    with pytest.raises(ValueError, match=r"guidance_scale=4.5 .* cfg_in_training=False"):
        make_policy(guidance_scale=4.5, cfg_in_training=False)


def test_missing_lora_path_is_named(tmp_path):
    missing = str(tmp_path / "no_such_lora")
    with pytest.raises(FileNotFoundError, match="lora_path .*no_such_lora.* does not exist"):
        FlowPolicy(FlowPolicy.Config(**TINY, lora_path=missing), device="cpu")


def test_nan_from_the_model_names_the_step():
    policy = make_policy()
    with torch.no_grad():
        policy.transformer.proj_out.weight[0, 0] = float("nan")     # a broken checkpoint
    with pytest.raises(FloatingPointError, match=r"non-finite velocity .* at denoising step 0 of 4"):
        policy.sample(make_batch())


def test_nan_in_training_forward_names_the_position():
    policy = make_policy()
    rollout = policy.sample(make_batch())
    with torch.no_grad():
        next(p for n, p in policy.transformer.named_parameters() if "lora_B" in n).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"at trained position 1 \(denoising steps \[1\]\)"):
        policy.log_prob(rollout, slice(1, 2))


def test_constructor_loads_a_saved_pipeline_directory(tmp_path):
    # FlowPolicy(cfg) goes through StableDiffusion3Pipeline.from_pretrained (no T5: text_encoder_3 = null)
    tiny_sd3_pipeline(seed=0).save_pretrained(str(tmp_path / "tiny_sd3"))
    policy = FlowPolicy(FlowPolicy.Config(**TINY, pretrained=str(tmp_path / "tiny_sd3")), device="cpu")
    reference = make_policy()
    batch = make_batch(group_size=1)
    assert torch.allclose(policy.sample(batch).outputs, reference.sample(batch).outputs, atol=1e-6)
