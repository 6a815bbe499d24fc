"""The reward payload format: exact round trips, tags that cannot be forged, refusals that name the field."""

import base64
import json
import math
import pickle
import struct

import numpy as np
import pytest
import torch

from mmgrpo.rewards.payload import (
    FORMAT,
    PayloadError,
    decode_request,
    decode_scores,
    decode_value,
    encode_request,
    encode_scores,
    encode_value,
    outputs_kind,
    read_wav,
    wav_bytes,
)


def test_values_round_trip_exactly():
    value = {"a": [1, 2.5, None, True, "x"], "t": torch.arange(6, dtype=torch.int16).reshape(2, 3),
             "arr": np.linspace(0, 1, 4, dtype=np.float64), "nan": float("nan"), "inf": float("-inf"),
             "$not_a_tag": {"$tensor": "user data"}, "raw": b"\x00\x01"}
    back = decode_value(json.loads(json.dumps(encode_value(value), allow_nan=False)))
    assert back["a"] == [1, 2.5, None, True, "x"]
    assert torch.equal(back["t"], value["t"]) and back["t"].dtype == torch.int16
    assert torch.equal(back["arr"], torch.from_numpy(value["arr"]))            # arrays travel as tensors
    assert math.isnan(back["nan"]) and back["inf"] == float("-inf")
    assert back["$not_a_tag"] == {"$tensor": "user data"}                     # user keys with $ are escaped
    assert back["raw"] == b"\x00\x01"


def test_text_request_round_trip_splits_columns_from_shared_metadata():
    body = encode_request(["a", "b"], [{"answer": "1"}, "p"], torch.tensor([7, 7]),
                          {"answer": ["1", "2"], "sample_rate": 16000, "weights": [0.5, 0.5]},
                          shared_keys=("weights",))
    req = decode_request(body)
    assert req.outputs == ["a", "b"] and req.conds == [{"answer": "1"}, "p"]
    assert req.group_ids.tolist() == [7, 7] and req.n == 2
    assert req.per_sample == {"answer": ["1", "2"]}
    assert req.shared == {"sample_rate": 16000, "weights": [0.5, 0.5]}


def test_images_png_round_trip_is_exact_for_8bit_values_and_safetensors_is_exact():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 5, 4), generator=gen).float() / 255.0
    req = decode_request(encode_request(images, ["p", "q"], [0, 1]))
    assert req.kind == "images" and torch.allclose(req.outputs, images, atol=1e-7)
    floats = torch.rand(2, 3, 5, 4, generator=gen)
    png = decode_request(encode_request(floats, ["p", "q"], [0, 1])).outputs
    assert (png - floats).abs().max() <= 0.5 / 255 + 1e-6                     # PNG rounds to 1/255
    exact = decode_request(encode_request(floats, ["p", "q"], [0, 1], image_format="safetensors")).outputs
    assert torch.equal(exact, floats)


def test_audio_round_trips():
    gen = torch.Generator().manual_seed(1)
    waves = [torch.randn(100, generator=gen), torch.randn(37, generator=gen)]
    wav = decode_request(encode_request(waves, ["a", "b"], [0, 0], {"sample_rate": 22050}))
    assert wav.kind == "audio" and all(torch.equal(x, y) for x, y in zip(wav.outputs, waves))   # float32 WAV
    st = decode_request(encode_request(waves, ["a", "b"], [0, 0], audio_format="safetensors"))
    assert all(torch.equal(x, y) for x, y in zip(st.outputs, waves))
    with pytest.raises(PayloadError, match="sample rate"):
        encode_request(waves, ["a", "b"], [0, 0])


def test_read_wav_pcm16_stereo_hand_made():
    # 2 frames, 2 channels, 16-bit PCM: (16384, 0) and (-32768, -32768) -> mono (0.25, -1.0)
    data = struct.pack("<4h", 16384, 0, -32768, -32768)
    fmt = struct.pack("<HHIIHH", 1, 2, 8000, 8000 * 4, 4, 16)
    wav = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
           + b"data" + struct.pack("<I", len(data)) + data)
    wave, rate = read_wav(wav)
    assert rate == 8000 and torch.allclose(wave, torch.tensor([0.25, -1.0]))
    back, rate = read_wav(wav_bytes(torch.tensor([0.1, -0.2]), 16000))
    assert rate == 16000 and torch.equal(back, torch.tensor([0.1, -0.2]))


def test_outputs_kind_guesses():
    assert outputs_kind(["x"]) == "text" and outputs_kind(torch.zeros(2, 3, 4, 4)) == "images"
    assert outputs_kind([torch.zeros(5)]) == "audio" and outputs_kind(torch.zeros(2, 50)) == "audio"
    assert outputs_kind(torch.zeros(2, 4, 3, 8, 8)) == "tensor"                # video [N,F,3,H,W]


def test_token_ids_travel_as_an_exact_tensor_not_as_audio():
    # Integer [N, L] outputs are token ids (e.g. the toy_match reward's), not waveforms: guessing audio
    # sent them as float WAV, or refused them for want of a sample rate.
    tokens = torch.tensor([[0, 7, 3], [5, 5, 1]])
    assert outputs_kind(tokens) == "tensor" and outputs_kind(tokens.numpy()) == "tensor"
    ragged = [torch.tensor([1, 2, 3]), torch.tensor([4])]                      # variable-length token ids
    assert outputs_kind(ragged) == "text"                                      # a JSON list of exact tensors
    back = decode_request(encode_request(ragged, ["a", "b"], [0, 1])).outputs
    assert [t.tolist() for t in back] == [[1, 2, 3], [4]] and back[0].dtype == torch.int64
    assert outputs_kind(np.zeros((2, 50), dtype=np.float32)) == "audio"
    req = decode_request(encode_request(tokens, [0, 1], [0, 1]))
    assert req.kind == "tensor" and req.outputs.dtype == torch.int64 and torch.equal(req.outputs, tokens)


def _envelope(**over):
    body = {"format": FORMAT, "n": 1, "kind": "text", "outputs": ["x"], "conds": ["p"], "group_ids": [0],
            "per_sample": {}, "shared": {}}
    body.update(over)
    return json.dumps(body).encode()


@pytest.mark.parametrize("body, message", [
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (pickle.dumps({"outputs": ["x"]}), "not UTF-8 JSON"),                        # pickle is never read
    (_envelope(format="other/9"), "format must be"),
    (_envelope(n=2), "n=2"),
    (_envelope(group_ids=["a"]), "group_ids must be integers"),
    (_envelope(outputs=[{"$tensor": "!!notbase64"}]), "invalid base64"),
    (_envelope(outputs=[{"$tensor": base64.b64encode(b"garbage").decode()}]), "not a valid safetensors"),
    (_envelope(outputs=[{"$pickle": "gASVAAAA"}]), "unknown tag '\\$pickle'"),
    (_envelope(outputs=[{"$tensor": "", "extra": 1}]), "holds only its tag"),
    (_envelope(per_sample={"answer": ["1", "2"]}), "per_sample.answer must hold n=1"),
    (_envelope(outputs={"$images": {"format": "png", "data": [base64.b64encode(b"GIF89a").decode()]}}),
     "not a PNG"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply|not UTF-8 JSON"),
])
def test_malformed_requests_are_refused_with_the_field_named(body, message):
    with pytest.raises(PayloadError, match=message):
        decode_request(body)


def test_scores_round_trip_with_nan_as_null():
    body = encode_scores(torch.tensor([0.5, float("nan"), -1.0]))
    assert json.loads(body) == {"scores": [0.5, None, -1.0]}
    back = decode_scores(body, 3)
    assert back[0] == 0.5 and math.isnan(back[1]) and back[2] == -1.0
    with pytest.raises(PayloadError, match="3 scores for 2 samples"):
        decode_scores(body, 2)
