"""GenEval-style compositional reward: object presence, counts, colors and relative positions, checked with
the open-vocabulary detector OWLv2.

Ghosh et al., "GenEval: An Object-Focused Framework for Evaluating Text-to-Image Alignment" (2023). GenEval
detects with Mask2Former and classifies colors with CLIP on crops; here one OWLv2 pass (Minderer et al.,
"Scaling Open-Vocabulary Object Detection", 2023) does both: every predicted box is scored against the
class queries ("a photo of a dog") and, for classes with a color requirement, against the colored queries
("a photo of a red dog"); a box's class is its best class query (OWL's own post-processing) and its color
is its best colored query. The requirement checks follow GenEval's `evaluate`: at least `count` objects
of each included class (the `count` most confident are checked for color and position), fewer than `count`
of each excluded class, relative positions from box centres with a margin of 0.1 x the box sizes.

Requirements come from GenEval metadata (`{"tag", "include": [{"class", "count", "color"?, "position"?}],
"exclude": [...]}`): the `metadata` keyword (one mapping per sample), else a mapping condition that holds
them (a line of GenEval's `evaluation_metadata.jsonl` is one), else a parser for GenEval's prompt templates.
Samples with none of these score NaN.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from .inputs import (
    check_count,
    chunks,
    load_pretrained,
    nan_scores,
    pooled,
    prompt_text,
    resolve_device,
    resolve_dtype,
    to_image_batch,
)

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")  # GenEval's
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10}
# GenEval's object vocabulary: the 80 COCO classes under GenEval's names.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
IRREGULAR_PLURALS = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
                     "geese": "goose", "teeth": "tooth", "feet": "foot", "knives": "knife", "wolves": "wolf",
                     "leaves": "leaf", "sheep": "sheep", "skis": "skis", "scissors": "scissors", "fish": "fish"}


@dataclass
class Detection:
    """One detected object: box (x0, y0, x1, y1) in the detector's normalized frame, confidence, color."""

    box: tuple[float, float, float, float]
    score: float
    color: str | None = None


# ----------------------------------------------------------------------------- requirements

def singular(noun: str) -> str:
    """Singular of the last word of `noun` ("hot dogs" -> "hot dog", "buses" -> "bus", "people" -> "person")."""
    *head, last = noun.split()
    if last in IRREGULAR_PLURALS:
        last = IRREGULAR_PLURALS[last]
    elif last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif re.search(r"(ches|shes|sses|xes|zes|uses)$", last):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith("ss"):
        last = last[:-1]
    return " ".join([*head, last])


def _phrase(text: str, classes: frozenset[str]) -> dict | None:
    """"a red car" -> {class: car, count: 1, color: red}; "three dogs" -> {class: dog, count: 3}; None when
    the noun is not one of `classes`."""
    words = text.split()
    if len(words) < 2:
        return None
    if words[0] in NUMBERS:
        count = NUMBERS[words[0]]
    elif words[0].isdigit() and int(words[0]) > 0:
        count = int(words[0])
    else:
        return None
    words = words[1:]
    color = None
    if words[0] in COLORS and len(words) > 1:
        color, words = words[0], words[1:]
    noun = " ".join(words)
    noun = singular(noun) if count > 1 and noun not in classes else noun
    if noun not in classes:
        return None
    req: dict[str, Any] = {"class": noun, "count": count}
    if color:
        req["color"] = color
    return req


def parse_geneval_prompt(prompt: str, classes: Any = COCO_CLASSES) -> dict | None:
    """GenEval metadata from a prompt in GenEval's templates over the object names `classes`, or None when
    it does not fit them.

    "a photo of a dog" (single_object), "a photo of a dog and a cat" (two_object), "a photo of three dogs"
    (counting: include 3, exclude 4), "a photo of a red dog" (colors), "a photo of a dog left of a cat"
    (position: the cat is object 0, the dog must be left of it), "a photo of a red dog and a blue cat" (color_attr).
    """
    vocab = frozenset(classes)
    text = re.sub(r"\s+", " ", prompt.strip().lower().rstrip("."))
    text = re.sub(r"^(a |an )?(photo|picture|image) of ", "", text)
    for rel in RELATIONS:
        if f" {rel} " in text:
            left, right = text.split(f" {rel} ", 1)
            a, b = _phrase(left, vocab), _phrase(right, vocab)
            if a is None or b is None:
                return None
            a["position"] = [rel, 0]
            return {"tag": "position", "include": [b, a], "exclude": []}
    reqs = [_phrase(part, vocab) for part in text.split(" and ")]
    if not reqs or any(r is None for r in reqs):
        return None
    if len(reqs) == 1:
        req = reqs[0]
        if req["count"] > 1:
            return {"tag": "counting", "include": reqs, "exclude": [{"class": req["class"], "count": req["count"] + 1}]}
        return {"tag": "colors" if "color" in req else "single_object", "include": reqs, "exclude": []}
    tag = "color_attr" if any("color" in r for r in reqs) else "two_object"
    return {"tag": tag, "include": reqs, "exclude": []}


def relative_position(box_a: tuple, box_b: tuple, margin: float = 0.1) -> set[str]:
    """Where A is relative to B (GenEval's rule): centre offset, shrunk by `margin` x (size A + size B) per
    axis, then a direction holds when its component of the unit offset exceeds 0.5. Image y grows downward."""
    ax0, ay0, ax1, ay1 = box_a
    bx0, by0, bx1, by1 = box_b
    offset = ((ax0 + ax1 - bx0 - bx1) / 2, (ay0 + ay1 - by0 - by1) / 2)  # centre A - centre B
    dims = ((ax1 - ax0) + (bx1 - bx0), (ay1 - ay0) + (by1 - by0))  # size A + size B per axis
    revised = [max(abs(o) - margin * d, 0.0) * math.copysign(1.0, o) for o, d in zip(offset, dims)]
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = math.hypot(*offset)
    dx, dy = revised[0] / norm, revised[1] / norm
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


def evaluate_requirements(spec: dict, objects: dict[str, list[Detection]], margin: float = 0.1
                          ) -> tuple[bool, float, list[str]]:
    """Check GenEval requirements against detections sorted by confidence (per class).

    Returns (all satisfied, fraction of checks satisfied, reasons for failures). Checks: one per included
    class count, one per color and per position requirement (failed when its count failed), one per
    excluded class.
    """
    passed, total, reasons = 0, 0, []
    matched: list[list[Detection] | None] = []
    for req in spec.get("include", []):
        cls, count = req["class"], int(req["count"])
        found = objects.get(cls, [])[:count]
        ok = len(found) >= count
        total += 1 + ("color" in req) + ("position" in req)
        if ok:
            passed += 1
        else:
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        if ok and "color" in req:
            n_color = sum(d.color == req["color"] for d in found)
            if n_color >= count:
                passed += 1
            else:
                ok = False
                reasons.append(f"expected {req['color']} {cls}>={count}, found {n_color}")
        if ok and "position" in req:
            rel, target = req["position"]
            targets = matched[target] if target < len(matched) else None
            if targets is None:
                ok = False
                reasons.append(f"no target for {cls} to be {rel}")
            elif all(rel in relative_position(d.box, t.box, margin) for d in found for t in targets):
                passed += 1
            else:
                ok = False
                reasons.append(f"expected {cls} {rel} target")
        matched.append(found if ok else None)
    for req in spec.get("exclude", []):
        cls, count = req["class"], int(req["count"])
        total += 1
        n = len(objects.get(cls, []))
        if n < count:
            passed += 1
        else:
            reasons.append(f"expected {cls}<{count}, found {n}")
    return not reasons, (passed / total if total else 1.0), reasons


# ----------------------------------------------------------------------------- detector

def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


class GenEvalReward:
    """GenEval-style compositional score per image: 1/0 (strict) or the fraction of checks passed (partial)."""

    name = "geneval"
    reads_media = ("outputs:images",)  # decoded media it reads (reward server, payload.media_reads)

    @dataclass
    class Config:
        checkpoint: str = "google/owlv2-base-patch16-ensemble"  # Owlv2ForObjectDetection + processor: hub id or local dir
        device: str | None = None  # device for this reward; null = the trainer's device
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # detector weights dtype (scores in fp32)
        batch_size: int = 8  # images per detector pass
        mode: Literal["strict", "partial"] = "strict"  # strict: GenEval's all-or-nothing; partial: fraction of checks passed
        threshold: float = 0.1  # box confidence threshold (OWLv2 scores run lower than GenEval's Mask2Former 0.3)
        counting_threshold: float = 0.1  # threshold for prompts tagged "counting" (GenEval: 0.9 with Mask2Former)
        nms_iou: float = 0.5  # per-class non-maximum suppression IoU; 1.0 disables it
        max_objects: int = 16  # most detections kept per class (GenEval: 16)
        position_margin: float = 0.1  # GenEval's POSITION_THRESHOLD: offsets shrink by margin x box sizes
        query_template: str = "a photo of a {}"  # text query per class; colored queries insert "<color> <class>"
        colors: list[str] = field(default_factory=lambda: list(COLORS))  # candidate colors for color checks
        metadata_key: str = "metadata"  # keyword argument with per-sample GenEval metadata (mappings or None)
        parse_prompts: bool = True  # parse GenEval-template prompts when a sample has no metadata
        classes: list[str] | None = None  # object names the prompt parser accepts; null = GenEval's 80 COCO names

        def __post_init__(self) -> None:
            for name in ("threshold", "counting_threshold"):
                if not 0.0 <= getattr(self, name) < 1.0:
                    raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
            if "{}" not in self.query_template:
                raise ValueError(f"query_template must contain '{{}}' for the class name, got {self.query_template!r}")

    def __init__(self, cfg: Config | None = None, device: Any = None):
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        self.cfg = cfg or self.Config()
        self.device = resolve_device(self.cfg.device, device)
        self.dtype = resolve_dtype(self.cfg.dtype, f"reward {self.name!r}")
        self.model = load_pretrained(Owlv2ForObjectDetection, self.cfg.checkpoint, self.name,
                                     "the OWLv2 detector (checkpoint)", dtype=self.dtype)
        self.model.to(self.device).eval().requires_grad_(False)
        self.processor = load_pretrained(AutoProcessor, self.cfg.checkpoint, self.name, "the OWLv2 processor (checkpoint)")
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self.last_reasons: list[list[str]] = []  # why each sample of the last call failed (for logging)

    # -- requirements per sample
    def specs(self, conds: list, metadata: Any) -> list[dict | None]:
        n = len(conds)
        if metadata is not None and len(metadata) != n:
            raise ValueError(f"reward {self.name!r}: {self.cfg.metadata_key}= has {len(metadata)} entries for {n} samples")
        out = []
        for i, cond in enumerate(conds):
            meta = metadata[i] if metadata is not None else None
            if meta is None and isinstance(cond, dict) and "include" in cond:
                meta = cond
            if meta is None and self.cfg.parse_prompts:
                meta = parse_geneval_prompt(prompt_text(cond, f"conds[{i}]"), self.cfg.classes or COCO_CLASSES)
            if meta is not None and not isinstance(meta.get("include"), list):
                raise ValueError(f"reward {self.name!r}: metadata for sample {i} needs an 'include' list, got {meta!r}")
            out.append(meta)
        return out

    def queries(self, cls: str, color: str | None = None) -> str:
        return self.cfg.query_template.format(f"{color} {cls}" if color else cls)

    # -- detection
    @torch.no_grad()
    def detect(self, images: Tensor, classes: list[list[str]], colored: list[set[str]],
               thresholds: list[float]) -> list[dict[str, list[Detection]]]:
        """Per image, the detections of each of its classes, most confident first.

        images `[N,3,H,W]` in [0,1]; classes[i]: class names to look for in image i; colored[i]: those of
        them whose color is needed; thresholds[i]: confidence threshold for image i.
        """
        results: list[dict[str, list[Detection]]] = []
        for sl in chunks(images.shape[0], self.cfg.batch_size):
            idx = range(sl.start, sl.stop)
            texts = sorted({self.queries(c, col) for i in idx for c in classes[i]
                            for col in ([None] + (list(self.cfg.colors) if c in colored[i] else []))})
            query_emb = self.text_embeds(texts) if texts else None  # [Q, D]
            row = {t: j for j, t in enumerate(texts)}
            proc = getattr(self.processor, "image_processor", self.processor)
            pixels = proc(images=images[sl].to(self.device), return_tensors="pt", do_rescale=False,
                          device=self.device)["pixel_values"].to(self.device, self.dtype)
            feature_map, _ = self.model.image_embedder(pixel_values=pixels)  # [n, h, w, D]
            n, h, w, d = feature_map.shape
            feats = feature_map.reshape(n, h * w, d)  # [n, P, D]
            boxes = box_cxcywh_to_xyxy(self.model.box_predictor(feats, feature_map).float())  # [n, P, 4]
            for k, i in enumerate(idx):
                if not classes[i]:
                    results.append({})
                    continue
                cls_rows = [row[self.queries(c)] for c in classes[i]]
                logits, _ = self.model.class_predictor(feats[k : k + 1], query_emb[None], None)  # [1, P, Q]
                scores = logits[0].float().sigmoid()  # [P, Q]
                results.append(self._objects(scores, boxes[k], classes[i], colored[i], cls_rows, row, thresholds[i]))
        return results

    def text_embeds(self, texts: list[str]) -> Tensor:
        tok = getattr(self.processor, "tokenizer", self.processor)
        out = []
        for sl in chunks(len(texts), max(self.cfg.batch_size, 1) * 4):
            batch = tok(texts[sl], padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
            out.append(pooled(self.model.owlv2.get_text_features(
                input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device))))
        return torch.cat(out)  # [Q, D]

    def _objects(self, scores: Tensor, boxes: Tensor, classes: list[str], colored: set[str], cls_rows: list[int],
                 row: dict[str, int], threshold: float) -> dict[str, list[Detection]]:
        from torchvision.ops import nms

        best, label = scores[:, cls_rows].max(-1)  # [P]: each box gets its best class (OWL post-processing)
        objects: dict[str, list[Detection]] = {}
        for c_idx, cls in enumerate(classes):
            keep = ((label == c_idx) & (best > threshold)).nonzero()[:, 0]  # [k]
            if keep.numel() and self.cfg.nms_iou < 1.0:
                keep = keep[nms(boxes[keep], best[keep], self.cfg.nms_iou)]  # sorted by score, descending
            keep = keep[best[keep].argsort(descending=True, stable=True)][: self.cfg.max_objects]
            color_rows = [row[self.queries(cls, col)] for col in self.cfg.colors] if cls in colored else []
            objects[cls] = [
                Detection(tuple(boxes[p].tolist()), float(best[p]),
                          self.cfg.colors[int(scores[p, color_rows].argmax())] if color_rows else None)
                for p in keep.tolist()
            ]
        return objects

    def __call__(self, outputs: Any, conds: list, **metadata: Any) -> Tensor:
        images = to_image_batch(outputs)  # [N,3,H,W] in [0,1]
        check_count(images.shape[0], conds, self.name)
        specs = self.specs(conds, metadata.get(self.cfg.metadata_key))
        classes, colored, thresholds = [], [], []
        for spec in specs:
            reqs = (spec or {}).get("include", []) + (spec or {}).get("exclude", [])
            classes.append(list(dict.fromkeys(r["class"] for r in reqs)))
            colored.append({r["class"] for r in reqs if "color" in r})
            thresholds.append(self.cfg.counting_threshold if (spec or {}).get("tag") == "counting" else self.cfg.threshold)
        detections = self.detect(images, classes, colored, thresholds)
        scores = nan_scores(len(conds))
        self.last_reasons = []
        for i, (spec, objects) in enumerate(zip(specs, detections)):
            if spec is None:
                self.last_reasons.append(["no GenEval metadata and the prompt fits no GenEval template"])
                continue
            correct, partial, reasons = evaluate_requirements(spec, objects, self.cfg.position_margin)
            scores[i] = float(correct) if self.cfg.mode == "strict" else partial
            self.last_reasons.append(reasons)
        return scores
