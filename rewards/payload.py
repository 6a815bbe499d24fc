"""The reward-server wire format: a JSON envelope whose decoding cannot execute code (never pickle).

A request is one JSON object:

    {"format": "mmgrpo.reward/1", "n": N,
     "outputs": <value>,                 # text: list of strings; images/audio/tensors: tagged, below
     "conds": [<value>, ...],            # N conditions
     "group_ids": [int, ...],            # N group ids
     "per_sample": {"answer": <value of N items>, ...},   # metadata columns, one entry per sample
     "shared": {"sample_rate": <value>, ...}}             # metadata that applies to the whole batch

A `<value>` is plain JSON (null, bool, int, float, string, list, object) or one of these tagged objects:
- `{"$tensor": "<base64 safetensors with one tensor 't'>"}`: a torch tensor (numpy arrays travel as
  tensors); safetensors reads a bounded header and raw little-endian data, nothing else;
- `{"$images": {"format": "png", "data": ["<base64 PNG>", ...]}}`: images `[N,3,H,W]` in [0, 1], sent as
  8-bit RGB PNGs (lossy: rounded to 1/255) and decoded to float32 `[N,3,H,W]` (a list if sizes differ);
- `{"$audio": {"format": "wav" | "safetensors", "sample_rate": int, "data": ...}}`: mono waveforms,
  WAV as 32-bit IEEE-float (exact for float32 input; one base64 WAV per clip) or one safetensors blob
  with tensors "0".."N-1"; decoded to a list of 1-D float32 tensors;
- `{"$float": "nan" | "inf" | "-inf"}` (JSON has no non-finite numbers), `{"$bytes": "<base64>"}`,
  `{"$map": [[key, value], ...]}` for mappings whose keys start with `$` (so user data cannot pose as a tag);
  a PIL image inside conds or metadata travels as `{"$images": {...one PNG...}, "single": true}` and
  arrives as a float32 `[3,H,W]` tensor.
A response is `{"scores": [float | null, ...]}` (null = NaN, not applicable) or `{"error": "..."}`.

Decoding is bounded per request (`DecodeLimits`): the decoded pixels of all `$images` and the decoded audio
samples of all `$audio` together stay within a budget, checked from the PNG/WAV/safetensors headers before
anything is decoded (`PayloadTooLarge`, HTTP 413); and media is decoded only where the served reward reads
it (its `reads_media`, see `media_reads`): media in `outputs` of a kind the reward does not read is refused
(`MediaNotRead`, HTTP 422); media in `conds` or metadata it does not read stays undecoded (`UndecodedMedia`).
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

FORMAT = "mmgrpo.reward/1"
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # per decoded image; PNG is compressed, so cap what it may expand to
MAX_REQUEST_PIXELS = 64_000_000  # default decoded pixels per request, all images together (~770 MB float32 RGB)
MAX_REQUEST_SAMPLES = 16_000 * 600  # default decoded audio samples per request: 10 minutes at 16 kHz
MAX_GROUP_ID = 2 ** 62  # group ids lie in [-2**62, 2**62), so shifting them (merge_requests) cannot overflow int64
OutputsKind = Literal["auto", "text", "images", "audio", "tensor"]
KINDS = ("text", "images", "audio", "tensor")
MEDIA_KINDS = ("images", "audio")  # the compressed tags whose decoding is budgeted and declared
MEDIA_PLACES = ("outputs", "conds", "metadata")
FIELDS = ("format", "n", "kind", "outputs", "conds", "group_ids", "per_sample", "shared")
RESERVED_METADATA = ("reward", "outputs", "conds", "group_ids")  # argument names of call_reward / every reward


class PayloadError(ValueError):
    """A payload is malformed; the message says which part and what was expected."""


class PayloadTooLarge(PayloadError):
    """The payload would decode to more pixels or audio samples than the request's budget (HTTP 413)."""


class MediaNotRead(PayloadError):
    """The outputs carry media of a kind the served reward does not read (HTTP 422)."""


@dataclass(frozen=True)
class UndecodedMedia:
    """Stands in for `$images`/`$audio` in conds or metadata that the served reward does not read; its bytes
    are dropped unread."""

    kind: str
    where: str

    def __repr__(self) -> str:
        return (f"<undecoded {self.kind} at {self.where}: the served reward does not declare reading "
                f"{self.kind} there (reads_media)>")


def media_reads(reward: Any) -> frozenset[tuple[str, str]]:
    """Where `reward` reads decoded media: `(place, kind)` pairs from its `reads_media` attribute.

    `reads_media` is a tuple of `"place:kind"` strings, place in outputs/conds/metadata and kind in
    images/audio, e.g. `("outputs:images",)`; `()` for a reward that reads no media (text rewards). A reward
    without the attribute reads media in its outputs only: `("outputs:images", "outputs:audio")`.
    """
    name = getattr(reward, "name", None) or type(reward).__name__
    declared = getattr(reward, "reads_media", ("outputs:images", "outputs:audio"))
    if isinstance(declared, str) or not isinstance(declared, (tuple, list, set, frozenset)):
        raise ValueError(f"reward {name!r}: reads_media must be a tuple of 'place:kind' strings, got {declared!r}")
    out = set()
    for item in declared:
        place, _, kind = str(item).partition(":")
        if place not in MEDIA_PLACES or kind not in MEDIA_KINDS:
            raise ValueError(f"reward {name!r}: reads_media entry {item!r} must be 'place:kind' with place in "
                             f"{', '.join(MEDIA_PLACES)} and kind in {', '.join(MEDIA_KINDS)}")
        out.add((place, kind))
    return frozenset(out)


@dataclass
class DecodeLimits:
    """What one request may decode: where media is decoded (`reads`; None = everywhere) and how much.

    `pixels`/`samples` count what this request has decoded so far; `take_*` refuses, before decoding, what
    would exceed `max_pixels`/`max_samples`.
    """

    reads: frozenset[tuple[str, str]] | None = None
    max_pixels: int = MAX_REQUEST_PIXELS
    max_samples: int = MAX_REQUEST_SAMPLES
    pixels: int = 0
    samples: int = 0

    def reads_at(self, place: str, kind: str) -> bool:
        return self.reads is None or (place, kind) in self.reads

    def take_pixels(self, count: int, where: str) -> None:
        if self.pixels + count > self.max_pixels:
            raise PayloadTooLarge(f"{where}: {count} decoded pixels would exceed the request's budget of "
                                  f"{self.max_pixels} pixels ({self.pixels} used); send fewer or smaller images")
        self.pixels += count

    def take_samples(self, count: int, where: str) -> None:
        if self.samples + count > self.max_samples:
            raise PayloadTooLarge(f"{where}: {count} decoded audio samples would exceed the request's budget of "
                                  f"{self.max_samples} samples ({self.samples} used); send fewer or shorter clips")
        self.samples += count


# ----------------------------------------------------------------------------- primitives

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise PayloadError(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise PayloadError(f"{where}: invalid base64 ({exc})") from None


def tensor_to_bytes(t: Tensor) -> bytes:
    from safetensors.torch import save

    return save({"t": t.detach().cpu().contiguous()})


def tensor_from_bytes(data: bytes, where: str) -> Tensor:
    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the sender's
        raise PayloadError(f"{where}: not a valid safetensors blob ({type(exc).__name__}: {exc})") from None
    if set(tensors) != {"t"}:
        raise PayloadError(f"{where}: expected one tensor named 't', got {sorted(tensors)}")
    return tensors["t"]


def wav_bytes(wave: Tensor, sample_rate: int) -> bytes:
    """Mono float32 WAV (WAVE_FORMAT_IEEE_FLOAT = 3) of a 1-D waveform: exact for float32 samples."""
    data = wave.detach().float().cpu().numpy().astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sample_rate, sample_rate * 4, 4, 32)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def _wav_parts(data: bytes, where: str) -> tuple[tuple, bytes]:
    """The RIFF structure of a WAV: its fmt fields `(tag, channels, rate, byte_rate, align, bits)` and raw samples."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PayloadError(f"{where}: not a RIFF/WAVE file")
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise PayloadError(f"{where}: fmt chunk too short")
            fmt = struct.unpack("<HHIIHH", body[:16])
            if fmt[0] == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the subformat's first 2 bytes
                fmt = (struct.unpack("<H", body[24:26])[0],) + fmt[1:]
        elif cid == b"data":
            samples = body
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        raise PayloadError(f"{where}: missing fmt or data chunk")
    tag, channels, rate, _, _, bits = fmt
    if channels < 1 or rate < 1:
        raise PayloadError(f"{where}: {channels} channels at {rate} Hz")
    if (tag, bits) not in _WAV_KINDS and (tag, bits) != (1, 24):
        raise PayloadError(f"{where}: unsupported WAV encoding (format tag {tag}, {bits} bits); "
                           "use PCM 8/16/24/32-bit or float 32/64")
    return fmt, samples


_WAV_KINDS = {(1, 8): "u1", (1, 16): "<i2", (1, 32): "<i4", (3, 32): "<f4", (3, 64): "<f8"}


def _wav_values(fmt: tuple, samples: bytes) -> int:
    """How many sample values (all channels) the raw data holds: what decoding it costs."""
    return len(samples) // max(1, fmt[5] // 8)


def read_wav(data: bytes, where: str = "wav") -> tuple[Tensor, int]:
    """Parse a mono or multi-channel WAV (PCM 8/16/24/32-bit or IEEE float 32/64) -> (mono float32 [S], rate).

    Channels are averaged; integer PCM is scaled to [-1, 1). Only the RIFF structure is read.
    """
    return _wav_decode(*_wav_parts(data, where))


def _wav_decode(fmt: tuple, samples: bytes) -> tuple[Tensor, int]:
    tag, channels, rate, _, _, bits = fmt
    if (tag, bits) == (1, 24):
        raw = np.frombuffer(samples[: len(samples) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
        b = raw.astype(np.int32)                                           # [S, 3] little-endian bytes
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        arr = np.where(ints >= 1 << 23, ints - (1 << 24), ints).astype(np.float64) / float(1 << 23)
    else:
        dt = np.dtype(_WAV_KINDS[(tag, bits)])
        arr = np.frombuffer(samples[: len(samples) // dt.itemsize * dt.itemsize], dtype=dt).astype(np.float64)
        if tag == 1:
            arr = (arr - 128.0) / 128.0 if bits == 8 else arr / float(1 << (bits - 1))
    arr = arr[: len(arr) // channels * channels].reshape(-1, channels).mean(axis=1)
    return torch.from_numpy(arr.astype(np.float32)), int(rate)


def png_bytes(image: Tensor) -> bytes:
    """float `[3,H,W]` in [0, 1] -> 8-bit RGB PNG bytes (values rounded to multiples of 1/255)."""
    from PIL import Image

    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _open_png(data: bytes, where: str) -> Any:
    """PNG bytes -> a lazily opened PIL image (only its header read); refuses a non-PNG and, from the header,
    an image above MAX_IMAGE_PIXELS. PIL's own decompression-bomb check stays on."""
    from PIL import Image

    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise PayloadError(f"{where}: not a PNG")
    try:
        img = Image.open(io.BytesIO(data), formats=["PNG"])
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is the sender's
        raise PayloadError(f"{where}: cannot decode PNG ({type(exc).__name__}: {exc})") from None
    if img.width * img.height > MAX_IMAGE_PIXELS:
        img.close()
        raise PayloadTooLarge(f"{where}: {img.width}x{img.height} exceeds {MAX_IMAGE_PIXELS} pixels per image")
    return img


def _png_into(img: Any, out: Tensor, where: str) -> None:
    """Decode an opened PNG into `out` float32 `[3,H,W]` as 0..255 (the caller divides): no float copies."""
    from PIL import Image

    try:
        with img:
            rgb = np.array(img.convert("RGB"), dtype=np.uint8)                # [H, W, 3], writable
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise PayloadError(f"{where}: cannot decode PNG ({type(exc).__name__}: {exc})") from None
    out.copy_(torch.from_numpy(rgb).permute(2, 0, 1))


def read_png(data: bytes, where: str) -> Tensor:
    """PNG bytes -> float32 `[3,H,W]` in [0, 1]; refuses images above MAX_IMAGE_PIXELS before decoding."""
    img = _open_png(data, where)
    out = torch.empty(3, img.height, img.width, dtype=torch.float32)
    _png_into(img, out, where)
    return out.div_(255.0)


# ----------------------------------------------------------------------------- values

def encode_value(value: Any, where: str = "value") -> Any:
    """A Python value -> JSON-ready value (tensors and arrays tagged; see the module docstring)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": "nan" if value != value else ("inf" if value > 0 else "-inf")}
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return encode_value(value.item(), where)
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Tensor):
        return {"$tensor": _b64(tensor_to_bytes(value))}
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": _b64(bytes(value))}
    if isinstance(value, (list, tuple)):
        return [encode_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise PayloadError(f"{where}: mapping keys must be strings, got {sorted(map(repr, value))}")
        items = {k: encode_value(v, f"{where}.{k}") for k, v in value.items()}
        if any(k.startswith("$") for k in items):
            return {"$map": [[k, v] for k, v in items.items()]}
        return items
    try:
        from PIL import Image

        if isinstance(value, Image.Image):
            arr = torch.from_numpy(np.asarray(value.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
            return {"$images": {"format": "png", "data": [_b64(png_bytes(arr.float() / 255.0))]}, "single": True}
    except ImportError:  # pragma: no cover - pillow is a core dependency
        pass
    raise PayloadError(f"{where}: cannot send a {type(value).__name__}; "
                       "use JSON values, tensors, arrays or images")


def decode_value(value: Any, where: str = "value", limits: DecodeLimits | None = None,
                 place: str = "metadata") -> Any:
    """The inverse of `encode_value` (plus `$images`/`$audio` outputs); raises PayloadError on anything else.

    `limits` bounds what media may decode and where (default: everywhere, the default budgets); `place` is
    where `value` sits in the request (outputs, conds or metadata)."""
    limits = DecodeLimits() if limits is None else limits
    return _decode(value, where, limits, place)


def _decode(value: Any, where: str, limits: DecodeLimits, place: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]", limits, place) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: unexpected JSON type {type(value).__name__}")
    tags = [k for k in value if k.startswith("$")]
    if not tags:
        return {k: _decode(v, f"{where}.{k}", limits, place) for k, v in value.items()}
    tag = tags[0]
    if len(value) != 1 and not (tag == "$images" and set(value) == {"$images", "single"}):
        raise PayloadError(f"{where}: a tagged object holds only its tag, got keys {sorted(value)}")
    body = value[tag]
    if tag in ("$images", "$audio") and not limits.reads_at(place, tag[1:]):
        if place == "outputs":
            raise MediaNotRead(f"{where}: the served reward does not read {tag[1:]} outputs (its reads_media: "
                               f"{sorted(f'{p}:{k}' for p, k in limits.reads or ())}); send the outputs it scores")
        return UndecodedMedia(tag[1:], where)
    if tag == "$tensor":
        return tensor_from_bytes(_unb64(body, where), where)
    if tag == "$float":
        if body not in ("nan", "inf", "-inf"):
            raise PayloadError(f"{where}: $float must be 'nan', 'inf' or '-inf', got {body!r}")
        return float(body)
    if tag == "$bytes":
        return _unb64(body, where)
    if tag == "$map":
        if not isinstance(body, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                                 for p in body):
            raise PayloadError(f"{where}: $map must be a list of [key, value] pairs")
        return {k: _decode(v, f"{where}.{k}", limits, place) for k, v in body}
    if tag == "$images":
        if "single" in value and not isinstance(value["single"], bool):
            raise PayloadError(f"{where}: 'single' must be true or false, got {value['single']!r}")
        images = _decode_images(body, where, limits)
        if value.get("single"):
            if len(images) != 1:
                raise PayloadError(f"{where}: a single image holds one PNG, got {len(images)}")
            return images[0]
        return images
    if tag == "$audio":
        return _decode_audio(body, where, limits)
    raise PayloadError(f"{where}: unknown tag {tag!r}; valid: $tensor, $float, $bytes, $map, $images, $audio")


def _decode_images(body: Any, where: str, limits: DecodeLimits) -> Tensor | list[Tensor]:
    """All PNGs' headers first (sizes, budget), then decode each straight into its float32 slot."""
    if not isinstance(body, dict) or body.get("format") != "png" or not isinstance(body.get("data"), list):
        raise PayloadError(f"{where}: $images must be {{'format': 'png', 'data': [base64 PNG, ...]}}")
    opened: list[Any] = []
    try:
        for i, d in enumerate(body["data"]):
            opened.append(_open_png(_unb64(d, f"{where}[{i}]"), f"{where}[{i}]"))
        sizes = [(img.height, img.width) for img in opened]
        limits.take_pixels(sum(h * w for h, w in sizes), where)
        if sizes and len(set(sizes)) == 1:
            out = torch.empty(len(sizes), 3, *sizes[0], dtype=torch.float32)      # [N, 3, H, W]
            slots = list(out)
        else:
            slots = [torch.empty(3, h, w, dtype=torch.float32) for h, w in sizes]
            out = slots
        for i, (img, slot) in enumerate(zip(opened, slots)):
            _png_into(img, slot, f"{where}[{i}]")
            slot.div_(255.0)
        return out
    finally:
        for img in opened:
            img.close()


def _safetensors_numel(blob: bytes, where: str) -> int:
    """Total elements a safetensors blob declares, from its JSON header alone."""
    if len(blob) < 8:
        raise PayloadError(f"{where}: not a valid safetensors blob (shorter than its 8-byte header size)")
    size = struct.unpack("<Q", blob[:8])[0]
    if size > len(blob) - 8:
        raise PayloadError(f"{where}: not a valid safetensors blob (header of {size} bytes in {len(blob)})")
    try:
        header = json.loads(blob[8:8 + size])
        return sum(math.prod(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise PayloadError(f"{where}: not a valid safetensors blob ({type(exc).__name__}: {exc})") from None


def _decode_audio(body: Any, where: str, limits: DecodeLimits) -> list[Tensor]:
    if not isinstance(body, dict) or body.get("format") not in ("wav", "safetensors"):
        raise PayloadError(f"{where}: $audio must have format 'wav' or 'safetensors'")
    if body["format"] == "wav":
        if not isinstance(body.get("data"), list):
            raise PayloadError(f"{where}: $audio wav data must be a list of base64 WAV files")
        parts = [_wav_parts(_unb64(d, f"{where}[{i}]"), f"{where}[{i}]") for i, d in enumerate(body["data"])]
        limits.take_samples(sum(_wav_values(*p) for p in parts), where)
        return [_wav_decode(*p)[0] for p in parts]
    from safetensors.torch import load

    blob = _unb64(body.get("data"), where)
    limits.take_samples(_safetensors_numel(blob, where), where)
    try:
        tensors = load(blob)
    except Exception as exc:  # noqa: BLE001
        raise PayloadError(f"{where}: not a valid safetensors blob ({exc})") from None
    n = len(tensors)
    if set(tensors) != {str(i) for i in range(n)} or any(t.ndim != 1 for t in tensors.values()):
        raise PayloadError(f"{where}: $audio safetensors must hold 1-D tensors named '0'..'{n - 1}'")
    return [tensors[str(i)].float() for i in range(n)]


# ----------------------------------------------------------------------------- outputs

def _floating(x: Tensor | np.ndarray) -> bool:
    return x.is_floating_point() if isinstance(x, Tensor) else np.issubdtype(x.dtype, np.floating)


def outputs_kind(outputs: Any) -> str:
    """Guess how to send `outputs`: text (strings/chat), images ([N,C,H,W], C in 1/3/4), audio (list of
    float 1-D waveforms or float [N,S]), else a plain tensor or JSON. Integer [N,L] tensors are token ids,
    not audio: they go as a tensor, exactly."""
    if isinstance(outputs, (Tensor, np.ndarray)):
        shape = tuple(outputs.shape)
        if len(shape) == 4 and shape[1] in (1, 3, 4):
            return "images"
        return "audio" if len(shape) == 2 and _floating(outputs) else "tensor"
    if isinstance(outputs, (list, tuple)) and outputs:
        first = outputs[0]
        if isinstance(first, (Tensor, np.ndarray)) and np.ndim(first) == 1 and _floating(first):
            return "audio"
        if isinstance(first, (Tensor, np.ndarray)) and np.ndim(first) == 3:
            return "images"
    return "text"


def _rgb_unit(image: Tensor, where: str) -> Tensor:
    """`[C,H,W]` (C in 1/3/4; uint8 or float in [0, 1]) -> float `[3,H,W]` in [0, 1]."""
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise PayloadError(f"{where}: expected an image [C,H,W] with C in 1/3/4, got shape {list(image.shape)}")
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]


def encode_outputs(outputs: Any, kind: OutputsKind = "auto", image_format: str = "png",
                   audio_format: str = "wav", sample_rate: int | None = None) -> Any:
    """Outputs -> JSON-ready value. Images go as PNG (or `image_format="safetensors"`, exact); audio as
    float WAV (needs `sample_rate`) or safetensors."""
    kind = outputs_kind(outputs) if kind == "auto" else kind
    if kind == "images":
        if image_format == "safetensors":
            return encode_value(torch.as_tensor(outputs) if not isinstance(outputs, list) else list(outputs))
        if image_format != "png":
            raise PayloadError(f"image_format must be 'png' or 'safetensors', got {image_format!r}")
        images = [_rgb_unit(torch.as_tensor(x), f"outputs[{i}]") for i, x in enumerate(outputs)]
        return {"$images": {"format": "png", "data": [_b64(png_bytes(x)) for x in images]}}
    if kind == "audio":
        waves = [torch.as_tensor(w).reshape(-1) for w in outputs]
        if audio_format == "safetensors":
            from safetensors.torch import save

            blob = save({str(i): w.detach().float().cpu().contiguous() for i, w in enumerate(waves)})
            return {"$audio": {"format": "safetensors", "data": _b64(blob)}}
        if audio_format != "wav":
            raise PayloadError(f"audio_format must be 'wav' or 'safetensors', got {audio_format!r}")
        if sample_rate is None:
            raise PayloadError("audio as WAV needs a sample rate: pass sample_rate=<Hz> as metadata, set the "
                               "RemoteReward config's sample_rate, or use audio_format='safetensors'")
        return {"$audio": {"format": "wav", "sample_rate": int(sample_rate),
                           "data": [_b64(wav_bytes(w, int(sample_rate))) for w in waves]}}
    if kind == "tensor":
        return encode_value(torch.as_tensor(outputs) if isinstance(outputs, np.ndarray) else outputs)
    if kind == "text":
        return encode_value(list(outputs))
    raise PayloadError(f"unknown outputs kind {kind!r}; valid: auto, text, images, audio, tensor")


# ----------------------------------------------------------------------------- requests and responses

def is_column(value: Any, n: int) -> bool:
    """Whether a metadata value holds one entry per sample (a list/tuple/tensor/array of length n)."""
    if isinstance(value, (list, tuple)):
        return len(value) == n
    if isinstance(value, (Tensor, np.ndarray)):
        return value.ndim >= 1 and value.shape[0] == n
    return False


@dataclass
class Request:
    """A decoded request: what the reward is called with, plus the shared metadata's JSON for batching."""

    outputs: Any
    conds: list
    group_ids: Tensor                      # [n] int64
    per_sample: dict[str, Any]
    shared: dict[str, Any]
    shared_json: str = ""                  # canonical JSON of `shared`: requests batch together when equal
    kind: str = field(default="text")

    @property
    def n(self) -> int:
        return len(self.conds)

    @property
    def metadata(self) -> dict[str, Any]:
        return {**self.shared, **self.per_sample}


def encode_request(outputs: Any, conds: list, group_ids: Any, metadata: dict[str, Any] | None = None,
                   shared_keys: tuple[str, ...] = (), kind: OutputsKind = "auto", image_format: str = "png",
                   audio_format: str = "wav", sample_rate: int | None = None) -> bytes:
    """Build the request body. Metadata values with one entry per sample are columns (`is_column`),
    except keys in `shared_keys`; the rest is shared."""
    metadata = dict(metadata or {})
    n = len(conds)
    gids = [int(g) for g in (group_ids.tolist() if isinstance(group_ids, Tensor) else group_ids)]
    if len(gids) != n:
        raise PayloadError(f"group_ids has {len(gids)} entries for {n} conds")
    rate = sample_rate if sample_rate is not None else metadata.get("sample_rate")
    per_sample = {k: encode_value(v, f"metadata.{k}") for k, v in metadata.items()
                  if k not in shared_keys and is_column(v, n)}
    shared = {k: encode_value(v, f"metadata.{k}") for k, v in metadata.items() if k not in per_sample}
    resolved_kind = outputs_kind(outputs) if kind == "auto" else kind
    body = {"format": FORMAT, "n": n, "kind": resolved_kind,
            "outputs": encode_outputs(outputs, resolved_kind, image_format, audio_format,
                                      rate if isinstance(rate, int) else None),
            "conds": [encode_value(c, f"conds[{i}]") for i, c in enumerate(conds)],
            "group_ids": gids, "per_sample": per_sample, "shared": shared}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _length(value: Any) -> int | None:
    if isinstance(value, (list, Tensor)):
        return len(value)
    return None


def decode_request(body: bytes, limits: DecodeLimits | None = None) -> Request:
    """Parse and check a request body; every problem is a PayloadError naming the field.

    `limits` (one per request) bounds the media decoded and says where it is decoded; default: everywhere,
    with the default budgets."""
    limits = DecodeLimits() if limits is None else limits
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, int above 4300 digits
        raise PayloadError(f"body is not UTF-8 JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        shown = ", ".join(_short(k, 40) for k in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise PayloadError(f"unknown fields [{shown}]; a request holds {', '.join(FIELDS)}")
    if data.get("format") != FORMAT:
        raise PayloadError(f"format must be {FORMAT!r}, got {_short(data.get('format'))}")
    n = data.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise PayloadError(f"n must be a non-negative int, got {_short(n)}")
    kind = data.get("kind", "text")
    if kind not in KINDS:
        raise PayloadError(f"kind must be one of {', '.join(KINDS)}, got {_short(kind)}")
    for key, typ in (("conds", list), ("group_ids", list), ("per_sample", dict), ("shared", dict)):
        if not isinstance(data.get(key), typ):
            raise PayloadError(f"{key} must be a JSON {typ.__name__}, got {type(data.get(key)).__name__}")
    if len(data["conds"]) != n or len(data["group_ids"]) != n:
        raise PayloadError(f"conds ({len(data['conds'])}) and group_ids ({len(data['group_ids'])}) "
                           f"must have n={n} entries")
    reserved = sorted((set(data["per_sample"]) | set(data["shared"])) & set(RESERVED_METADATA))
    if reserved:
        raise PayloadError(f"metadata keys {reserved} are reserved ({', '.join(RESERVED_METADATA)} are the reward's "
                           "own arguments); rename them")
    if not all(isinstance(g, int) and not isinstance(g, bool) for g in data["group_ids"]):
        raise PayloadError("group_ids must be integers")
    if not all(-MAX_GROUP_ID <= g < MAX_GROUP_ID for g in data["group_ids"]):
        raise PayloadError(f"group_ids must lie in [-2**62, 2**62), got {_short(min(data['group_ids']))}.."
                           f"{_short(max(data['group_ids']))}")
    try:
        outputs = decode_value(data.get("outputs"), "outputs", limits, "outputs")
        conds = decode_value(data["conds"], "conds", limits, "conds")
        per_sample = {k: decode_value(v, f"per_sample.{k}", limits) for k, v in data["per_sample"].items()}
        shared = {k: decode_value(v, f"shared.{k}", limits) for k, v in data["shared"].items()}
    except RecursionError:
        raise PayloadError("payload nested too deeply") from None
    if _length(outputs) != n:
        raise PayloadError(f"outputs must hold n={n} items, got {_length(outputs)}")
    for k, v in per_sample.items():
        if _length(v) != n:
            raise PayloadError(f"per_sample.{k} must hold n={n} items, got {_length(v)}")
    return Request(outputs=outputs, conds=conds, group_ids=torch.tensor(data["group_ids"], dtype=torch.int64),
                   per_sample=per_sample, shared=shared, kind=kind,
                   shared_json=json.dumps(data["shared"], sort_keys=True))


def _short(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters (a 5,000-digit number is not echoed whole)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else f"<{value.bit_length()}-bit int>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_scores(scores: Tensor) -> bytes:
    """`[N]` scores -> `{"scores": [...]}` with null for NaN (and for +-inf, which no reward should give)."""
    values = [float(s) if math.isfinite(float(s)) else None for s in scores.reshape(-1).tolist()]
    return json.dumps({"scores": values}).encode("utf-8")


def decode_scores(body: bytes, n: int) -> Tensor:
    """The inverse of `encode_scores`, checking there are `n` scores; null -> NaN."""
    try:
        data = json.loads(body.decode("utf-8"))
        values = data["scores"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PayloadError(f"response is not {{'scores': [...]}} ({type(exc).__name__}: {exc})") from None
    if not isinstance(values, list) or len(values) != n:
        count = len(values) if isinstance(values, list) else "no"
        raise PayloadError(f"response holds {count} scores for {n} samples")
    return torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float32)
