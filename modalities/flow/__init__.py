"""Flow-matching adapter: stochastic sampling steps, sampling schedules and the diffusers-backed `FlowPolicy`.

Heavy imports (diffusers, transformers, peft) live in `policy.py`, `sd3.py` and `tiny.py`; importing this
package or `sde` / `schedules` needs only torch.
"""
