"""``fastpipes run sam``: segment a folder of images with point / box prompts or everything.

Each image is encoded once (fastpipes' :class:`SamPredictor`, accelerated by the recipe)
and all its prompts are decoded from that embedding. Outputs under ``--out``::

    masks/<image key>/<prompt>.png     one binary PNG (0/255) per mask, image-sized
    masks.json                         per image: every mask's score, area, bbox and COCO RLE
    overlays/<image key>.png           with --overlays: the image, its masks tinted + outlined

``--save-embeddings DIR`` keeps each image's embedding as ``DIR/<image key>.sam.pt``;
``--embeddings DIR`` reuses such files (no encoder call for an image whose file was saved
from the same picture by the same encoder; any other image is encoded, and masks.json says
why its file was not used).

>>> summary = fastpipes.run_sam("photos/", "out/", points="320,240", model="vit_b",
...                             checkpoint="sam_vit_b_01ec64.pth")  # doctest: +SKIP
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from fastpipes.bounds import check_int
from fastpipes.errors import InputError
from fastpipes.sam.amg import AmgConfig, generate_masks
from fastpipes.sam.embeddings import set_image_reusing
from fastpipes.sam.overlay import overlay_png
from fastpipes.sam.prompts import (check_image_shape, parse_boxes, parse_points,  # noqa: F401
                                   prompt_arrays, prompts_from_flags, read_prompt_file)
from fastpipes.run.base import Flag, Item, Job
from fastpipes.run.jobs import RunSummary, run_job
from fastpipes.run.outdir import OutDir, atomic_write_lines
from fastpipes.sam.image_io import (decode_rle, encode_rle, image_keys, list_images, load_image,
                                  mask_entry, png_bytes)

# ---------------------------------------------------------------------------- the job
_AMG = AmgConfig()
# --everything's settings: (flag, AmgConfig field, what it means)
AMG_FLAGS = (("--points-per-side", "points_per_side", "grid of N x N prompts"),
             ("--points-per-batch", "points_per_batch", "prompts decoded at once"),
             ("--pred-iou-thresh", "pred_iou_thresh",
              "keep masks whose predicted IoU is above this"),
             ("--stability-thresh", "stability_score_thresh",
              "... and whose stability score is at least this"),
             ("--box-nms-thresh", "box_nms_thresh",
              "box IoU above which the lower-scoring mask is a duplicate"),
             ("--crop-layers", "crop_n_layers", "also segment 2**i x 2**i crops, i = 1..N"))
FLAGS = (
    Flag("--images", required=True, metavar="DIR|GLOB",
         help="a directory (PNG/JPEG, recursively), a quoted glob, or a file"),
    Flag("--points", type=parse_points, metavar="X,Y[,L];...",
         help="one prompt of these points on every image (label 1 foreground, 0 background)"),
    Flag("--boxes", type=parse_boxes, metavar="X0,Y0,X1,Y1;...",
         help="one prompt per box on every image"),
    Flag("--prompts", metavar="FILE.json", help="per-image prompts: {\"name.jpg\": "
         "[{\"points\": [[x, y]], \"labels\": [1]}, {\"box\": [x0, y0, x1, y1]}], \"*\": [...]}"),
    Flag("--everything", action="store_true",
         help="automatic mask generation: a grid of point prompts, deduplicated"),
    *(Flag(flag, type=type(getattr(_AMG, name)), default=getattr(_AMG, name), dest=name,
           metavar="N" if isinstance(getattr(_AMG, name), int) else "X",
           help=f"--everything: {text} (default {getattr(_AMG, name):g})")
      for flag, name, text in AMG_FLAGS),
    Flag("--all-masks", action="store_true",
         help="keep SAM's three candidate masks per prompt, not only the best"),
    Flag("--no-png", action="store_false", dest="png",
         help="masks only as RLE in masks.json (no PNG per mask)"),
    Flag("--overlays", action="store_true",
         help="also write overlays/<image key>.png: the image with its masks tinted and "
              "outlined, one colour per mask (off by default: masks are the product)"),
    Flag("--save-embeddings", metavar="DIR",
         help="keep each image's embedding as DIR/<image key>.sam.pt, for --embeddings or "
              "SamPredictor.load_embedding"),
    Flag("--embeddings", metavar="DIR",
         help="reuse embeddings saved by --save-embeddings: no encoder call for an image whose "
              "file was saved from the same picture by the same encoder; any other image is "
              "encoded, and masks.json's 'embedding' says why"),
    Flag("--checkpoint", help="local SAM checkpoint (.pth) of --model"))


@dataclass(frozen=True, kw_only=True)
class SamJob(Job):
    """Segment images: one of points/boxes (the same prompts on every image),
    `prompt_file` (per-image prompts, JSON) or `everything` (automatic mask generation)."""

    images: str = ""  # a directory, a glob, or one file
    points: tuple[tuple[float, float, int], ...] = ()  # one prompt of these points
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # one prompt per box
    prompt_file: str | None = None
    everything: bool = False
    amg: AmgConfig = field(default_factory=AmgConfig)
    all_masks: bool = False  # keep SAM's three candidates per prompt, not only the best
    png: bool = True  # also write each mask as a PNG (masks.json always has its RLE)
    overlays: bool = False  # also write the image with its masks tinted, overlays/<key>.png
    save_embeddings: str | None = None  # a directory: keep each image's embedding there
    embeddings: str | None = None  # a directory of saved embeddings to reuse
    model: str | None = "vit_b"

    family: ClassVar[str] = "sam"
    result_file: ClassVar[str] = "masks.json"
    # embeddings: where saved inputs are; the masks are the same with or without them
    input_fields: ClassVar[tuple[str, ...]] = ("images", "prompt_file", "embeddings")
    SUMMARY: ClassVar[str] = ("segment images (point / box prompts, a per-image prompt file, "
                              "or everything)")
    MODEL_HELP: ClassVar[str] = "vit_b (default), vit_l or vit_h (tiny: a test shape)"
    FLAGS: ClassVar[tuple[Flag, ...]] = FLAGS

    @classmethod
    def run_cli(cls, flags: dict[str, Any], common: dict[str, Any]) -> RunSummary:
        amg = {name: flags.pop(name) for _, name, _ in AMG_FLAGS}
        return run_sam(**flags, amg=amg, **{**common, "model": common["model"] or "vit_b"})

    def check(self) -> None:
        from fastpipes.sam.pipeline import SamShape

        sources = [bool(self.points or self.boxes), bool(self.prompt_file), self.everything]
        if sum(sources) != 1:
            raise InputError("give exactly one kind of prompt: --points and/or --boxes, "
                             "--prompts FILE (per image), or --everything")
        if self.points and len(self.boxes) > 1:
            raise InputError("--points with --boxes makes one prompt of the points and one "
                             "box; give one box, or a --prompts file for several")
        SamShape.from_name(self.model or "")  # InputError listing the model names
        if self.random_weights == bool(self.checkpoint):
            raise InputError("SAM needs --checkpoint FILE (the model's .pth) or, to try it "
                             "out, --random-weights; not " +
                             ("both" if self.checkpoint else "neither"))
        if self.checkpoint and not Path(self.checkpoint).expanduser().is_file():
            raise InputError(f"--checkpoint {self.checkpoint}: no such file")
        if self.embeddings and not Path(self.embeddings).expanduser().is_dir():
            raise InputError(f"--embeddings {self.embeddings}: no such directory (it is where "
                             "--save-embeddings kept them)")
        if self.save_embeddings and Path(self.save_embeddings).expanduser().is_file():
            raise InputError(f"--save-embeddings {self.save_embeddings} is a file; give a "
                             "directory (one file per image goes there)")
        for module, extra in (("PIL", "pillow"), ("pycocotools", "pycocotools")):
            try:
                __import__(module)
            except ImportError:
                raise InputError(f"fastpipes run sam needs {extra}: pip install "
                                 "'fastpipes[sam]'") from None

    def items(self) -> list[Item]:
        found = list_images(self.images, exclude=Path(self.out).expanduser())
        check_int("images", len(found), f"--images {self.images}: the number of images",
                  extra="; split them into several jobs")
        names = [n for _, n in found]
        table = read_prompt_file(self.prompt_file) if self.prompt_file else None
        fixed = None if self.everything or table is not None else \
            prompts_from_flags(self.points, self.boxes)
        items = []
        for (path, name), key in zip(found, image_keys(names)):
            st = path.stat()
            payload = {"path": str(path.resolve()), "name": name,
                       "stat": [st.st_size, st.st_mtime_ns], "prompts": fixed}
            if table is not None:
                prompts = table.get(name, table.get(Path(name).name, table.get("*")))
                payload["prompts"] = prompts
                if prompts is None:
                    payload["error"] = f"no prompts for {name!r} in {self.prompt_file} " \
                                              "(keys are image names as listed, or '*')"
            items.append(self.make_item(key, payload))
        return items

    def build(self) -> Any:
        from fastpipes.sam.predictor import SamPredictor

        return SamPredictor(self.build_pipeline(model=self.model, checkpoint=self.checkpoint,
                                                seed=self.seed))

    def modules(self, pipe: Any) -> dict[str, Any]:
        return {"": pipe.model}

    def warm_up(self, pipe: Any) -> None:
        size = pipe.model.image_encoder.img_size  # every image is padded to this square
        pipe.set_image(np.zeros((size, size, 3), np.uint8))
        pipe.predict(np.array([[size / 2, size / 2]]), np.array([1]))
        pipe.reset_image()

    def process(self, pipe: Any, item: Item) -> tuple[dict[str, bytes], dict]:
        p = item.payload
        image = load_image(p["path"])
        h, w = image.shape[:2]
        check_image_shape(h, w)
        files: dict[str, bytes] = {}
        masks = []
        embedding: dict = {}  # where the embedding came from, with --(save-)embeddings
        set_image = self._image_setter(pipe, item.key, embedding)
        if self.everything:
            found_all = generate_masks(pipe, image, self.amg, set_image)
            for j, found in enumerate(found_all):
                mask = decode_rle(found["segmentation"]) if self.png else None
                masks.append({"file": self._png(files, item.key, str(j), mask),
                              "score": found["predicted_iou"], **found})
        else:
            check_int("prompts_per_image", len(p["prompts"]), "the number of prompts")
            set_image(image)  # one embedding for all of this image's prompts
            try:
                for j, prompt in enumerate(p["prompts"]):
                    masks += self._decode(pipe, files, item.key, j, prompt)
            finally:
                pipe.reset_image()
        record = {"image": p["name"], "path": p["path"], "height": h, "width": w}
        if self.overlays:
            rel = record["overlay"] = f"overlays/{item.key}.png"
            files[rel] = overlay_png(image, (decode_rle(m["segmentation"]) for m in masks))
        if embedding:
            record["embedding"] = embedding
        return files, {**record, "masks": masks}

    def _image_setter(self, pipe: Any, key: str, info: dict) -> Callable[[np.ndarray], None]:
        """How the whole image is set on `pipe`: encoded, or from a saved embedding (what
        happened goes into `info`); then kept with --save-embeddings."""
        if not (self.embeddings or self.save_embeddings):
            return pipe.set_image

        def at(folder: str | None) -> Path | None:
            return Path(folder).expanduser() / f"{key}.sam.pt" if folder else None

        def set_image(image: np.ndarray) -> None:
            info.update(set_image_reusing(pipe, image, at(self.embeddings),
                                          at(self.save_embeddings)))
        return set_image

    def _decode(self, pipe: Any, files: dict, key: str, j: int, prompt: Any) -> list[dict]:
        coords, labels, box = prompt_arrays(prompt)
        # SAM's advice: a single point is ambiguous, so ask for three masks and keep the best
        single_point = box is None and coords is not None and len(coords) == 1
        multimask = self.all_masks or single_point
        masks, scores, _ = pipe.predict(coords, labels, box, multimask_output=multimask)
        picks = range(len(scores)) if self.all_masks else [int(np.argmax(scores))]
        out = []
        for c in picks:
            name = f"{j}_{c}" if self.all_masks else str(j)
            entry = mask_entry(masks[c], encode_rle(masks[c]))
            out.append({"file": self._png(files, key, name, masks[c]), "prompt": j,
                        "candidate": c, "score": float(scores[c]), **entry})
        return out

    def _png(self, files: dict, key: str, name: str, mask: np.ndarray | None) -> str | None:
        if not self.png:
            return None
        rel = f"masks/{key}/{name}.png"
        files[rel] = png_bytes(mask)
        return rel

    def finalize(self, out: OutDir, records: Iterator[dict]) -> None:
        head = {"family": "sam", "model": self.model, "checkpoint": self.checkpoint,
                "random_weights": self.random_weights,
                "mode": "everything" if self.everything else "prompts",
                "rle": "COCO RLE (pycocotools), counts as str; decode with "
                       "pycocotools.mask.decode"}
        atomic_write_lines(out.root / self.result_file, _json_array_lines(head, "images", records))


def _json_array_lines(head: dict, key: str, records: Iterator[dict]) -> Iterator[str]:
    """One JSON object {**head, key: [records...]}, streamed a record per line."""
    yield json.dumps(head)[:-1] + f', "{key}": ['
    prev = None
    for rec in records:
        if prev is not None:
            yield prev + ","
        prev = json.dumps(rec)
    if prev is not None:
        yield prev
    yield "]}"


def run_sam(images: str | Path, out: str | Path, *, points: str | Sequence | None = None,
            boxes: str | Sequence | None = None, prompts: str | Path | None = None,
            everything: bool = False, amg: AmgConfig | dict | None = None,
            all_masks: bool = False, png: bool = True, overlays: bool = False,
            save_embeddings: str | Path | None = None, embeddings: str | Path | None = None,
            model: str = "vit_b",
            checkpoint: str | Path | None = None, random_weights: bool = False,
            recipe: str = "auto", overrides: Sequence[str] = (), seed: int = 0,
            device: str = "cpu", engine: str = "local", actors: int = 1,
            cpus_per_actor: float | None = None, address: str | None = None,
            progress: bool = True) -> RunSummary:
    """Segment every image in `images` (a directory, a glob or a file) into `out`.

    Prompts: `points` ("x,y[,label];..." or [(x, y, label), ...]) and/or `boxes`
    ("x0,y0,x1,y1;..." or [(x0, y0, x1, y1), ...]), the same for every image; or
    `prompts`, a JSON file of per-image prompts; or `everything` (automatic mask
    generation, settings in `amg`). `overlays`: also the image with its masks tinted, per
    image. `save_embeddings` (a directory) keeps each image's embedding; `embeddings` reuses
    them (an image without a usable file is encoded; masks.json says why). Resumable: a
    rerun with the same `out` skips finished images. `engine="ray"` spreads the images over
    `actors` Ray actors (each reads and writes the embedding directories itself).

    >>> s = fastpipes.run_sam("pics/", "out/", everything=True, model="vit_b",
    ...                       checkpoint="sam_vit_b_01ec64.pth", recipe="sam_bf16")  # doctest: +SKIP
    >>> s.done, s.failed, s.items_per_s                                              # doctest: +SKIP
    """
    def as_text(rows: Any) -> str:  # tuples from Python go through the CLI's checks too
        return rows if isinstance(rows, str) else ";".join(",".join(map(str, r)) for r in rows)

    pts = parse_points(as_text(points)) if points else ()
    bxs = parse_boxes(as_text(boxes)) if boxes else ()
    if isinstance(amg, dict):
        allowed = [f.name for f in fields(AmgConfig)]
        if unknown := sorted(set(amg) - set(allowed)):
            raise InputError(f"amg: unknown settings {unknown}; allowed: {', '.join(allowed)}")
        amg = AmgConfig(**amg)
    job = SamJob(out=str(out), images=str(images), points=pts, boxes=bxs,
                 prompt_file=str(prompts) if prompts else None, everything=everything,
                 amg=amg or AmgConfig(), all_masks=all_masks, png=png, overlays=overlays,
                 # absolute: a Ray actor's working directory is another, and the path is part
                 # of the job's identity (a rerun asking for embeddings makes them)
                 save_embeddings=_absolute(save_embeddings), embeddings=_absolute(embeddings),
                 model=model,
                 checkpoint=str(checkpoint) if checkpoint else None,
                 random_weights=random_weights, recipe=recipe, overrides=tuple(overrides),
                 seed=seed, device=device)
    return run_job(job, engine, actors, cpus_per_actor, address, progress)


def _absolute(path: str | Path | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None
