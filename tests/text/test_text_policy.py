"""TextPolicy on a tiny random LlamaForCausalLM: replay contract (temperature/top-p on), shared prefix == naive."""

import torch

from mmgrpo.modalities.text.logprobs import naive_log_probs, shared_prefix_log_probs
from mmgrpo.modalities.text.policy import TextPolicy
from mmgrpo.rollout import SampleBatch
from tests.contract import check_replay


def tiny():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate("0123456789+=")}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    t.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    t.decoder = decoders.Fuse()                     # characters decode without separators
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=1)
    return LlamaForCausalLM(cfg).float(), tok


def batch(conds, g):
    n = len(conds) * g
    return SampleBatch(conds=[c for c in conds for _ in range(g)], group_ids=torch.arange(n) // g,
                       seeds=torch.arange(n) + 7, group_seeds=torch.arange(n) // g)


def test_replay_with_temperature_top_p_and_left_padding():
    model, tok = tiny()
    pol = TextPolicy(TextPolicy.Config(max_new_tokens=5, temperature=0.8, top_p=0.9, top_k=8, lora_rank=4),
                     model=model, tokenizer=tok)
    check_replay(pol, batch(["12+3=", "7="], 3), splits=[1, 4, 6])


def test_shared_prefix_equals_naive_log_probs_and_gradients():
    model, tok = tiny()
    ids = tok(["12+34=", "5="], return_tensors="pt", padding=True, padding_side="left")
    prompt = ids["input_ids"].repeat_interleave(3, 0)
    attn = ids["attention_mask"].repeat_interleave(3, 0)
    comp = torch.randint(2, 14, (6, 4), generator=torch.Generator().manual_seed(0))
    gid = torch.arange(6) // 3
    outs = []
    for fn in (lambda: naive_log_probs(model, prompt, attn, comp, temperature=0.7),
               lambda: shared_prefix_log_probs(model, prompt, attn, comp, gid, temperature=0.7)):
        model.zero_grad()
        lp, _ = fn()
        lp.sum().backward()
        outs.append((lp.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert max((a - b).abs().max().item() for a, b in zip(outs[0][1], outs[1][1])) < 1e-5


def test_stop_strings_and_eos_cut_the_trainable_mask_by_hand():
    model, tok = tiny()
    pol = TextPolicy(TextPolicy.Config(max_new_tokens=5, stop_strings=("=",), lora_rank=4), model=model,
                     tokenizer=tok)
    ids = lambda s: [tok.convert_tokens_to_ids(c) for c in s]                       # noqa: E731
    comp = torch.tensor([ids("12=34"),                        # stop string completed by token 3
                         ids("7") + [tok.eos_token_id] + ids("890"),    # EOS at token 2
                         ids("45678")])                       # neither: the whole completion trains
    keep, texts = pol._stop_mask(comp)
    assert keep.tolist() == [[True, True, True, False, False], [True, True, False, False, False], [True] * 5]
    assert texts == ["12", "7", "45678"]
