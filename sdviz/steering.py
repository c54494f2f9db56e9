"""Steering: move what the denoiser reads along a probe's direction and see what changes downstream.

Probes read attributes; steering tests the causal claim behind them. For an attribute and a strength s, the
probe's weight vector w (un-standardised into feature units) gives the direction d = s * w / |w|^2: added to a
representation, it moves that probe's reading by exactly s (rating units) and nothing else the probe sees.
`steer` adds d, as an edit of the one hook primitive (`shift`, through `trace(edits=...)`), to the conditioning the
denoiser receives (`clip.cond`: every real token, so its masked mean moves by d) or to one UNet block's output at
chosen steps, regenerates with the same seed and decodes both runs with `Bundle.decode`. `steer_eval` turns that
into a measurement over the dataset's words: how much the target attribute moves downstream against the others,
with held-out directions and a random-direction control (docs/steering.md).
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .bundle import Bundle, check_bundle_matches, clip_probe_name
from .capture import COND, Edit, is_per_step
from .config import MAX_STEPS
from .errors import SdvizError
from .families import hook_points
from .probes import fit_ridge, kfold
from .run import Trace, trace

MAX_STRENGTH = 1000.0  # rating units: Binder's scale is 0-6, so this is far beyond any meaningful shift


@dataclass
class SteerResult:
    prompt: str
    attribute: str
    strength: float
    where: str  # "clip.cond" or a UNet block name ("unet.mid")
    steps_steered: list[int]  # denoising steps k (0 = pure noise) where the shift was applied
    original: Trace  # decode=True, batch of 1, all representations
    steered: Trace
    decoded_original: dict[str, dict[str, float]]  # representation -> attribute -> value (per-step names: last step)
    decoded_steered: dict[str, dict[str, float]]
    target_change: dict[str, float]  # representation -> steered - original for `attribute`
    others_change: dict[str, float]  # representation -> mean |steered - original| over the other attributes


def _unit_direction(weight: torch.Tensor, std: torch.Tensor, what: str) -> torch.Tensor:
    """w / |w|^2 in feature units for one attribute's standardised weights: moves the reading by exactly 1."""
    w = weight.double() / std.double()
    norm2 = float((w**2).sum())
    if norm2 == 0.0:
        raise SdvizError(f"The probe for {what} has all-zero weights (its penalty shrank it away), so it gives no "
                         "direction to steer along. Pick another attribute or representation.")
    return (w / norm2).float()


def steer_direction(bundle: Bundle, name: str, attribute: str, *, live_step: int = 0, live_steps: int = 1) -> torch.Tensor:
    """The feature-unit vector that moves `name`'s probe reading of `attribute` by exactly 1 (scale by the strength).
    A per-step probe is the one that serves live step k of a `live_steps`-step run (`Bundle.trained_step`)."""
    if attribute not in bundle.attributes:
        raise SdvizError(f"Unknown attribute '{attribute}'. The bundle's attributes are: {', '.join(bundle.attributes)}.")
    if name not in bundle.probes:
        raise SdvizError(f"The bundle has no probe for '{name}'. It has: {', '.join(bundle.probes)}.")
    probe = bundle.probes[name]
    j = bundle.trained_step(name, live_step, live_steps)
    t = bundle.attributes.index(attribute)
    return _unit_direction(probe.weight[j][:, t], probe.std[j], f"{attribute} in {name}")


def shift(vectors) -> Edit:
    """An edit for `Capture` / `trace(edits=...)` that adds a vector along the channels of a hook point's tensor.

    vectors: one tensor ([dim], or [batch, dim] for one per prompt) for every step, or {step k: tensor} for those
    steps only (the others pass through untouched, bit for bit). On `clip.cond` the masked mean moves by exactly the
    vector; on a block ([batch, channels, H, W]) it is added at every position, so the pooled feature moves by it.
    """
    by_step = vectors if isinstance(vectors, dict) else None

    def edit(x: torch.Tensor, step) -> torch.Tensor:
        v = vectors if by_step is None else by_step.get(step)
        if v is None:
            return x
        rows = v.float().to(x.device)
        rows = rows.expand(x.shape[0], -1) if rows.dim() == 1 else rows  # [batch, dim]
        rows = rows.reshape(*rows.shape, *[1] * (x.dim() - 2)) if x.dim() == 4 else rows  # a feature map: every position
        rows = rows[:, None, :] if x.dim() == 3 else rows  # token states [batch, tokens, dim]: every token
        return x + rows.to(x.dtype)

    return edit


def _changes(before: dict, after: dict, attribute: str) -> tuple[dict[str, float], dict[str, float]]:
    target, others = {}, {}
    for name in before:
        delta = {a: after[name][a] - before[name][a] for a in before[name]}
        target[name] = delta[attribute]
        rest = [abs(v) for a, v in delta.items() if a != attribute]
        others[name] = float(np.mean(rest)) if rest else 0.0
    return target, others


def _blocks(pipe) -> list[str]:
    return [p.name for p in hook_points(pipe) if p.kind == "block"]


def _canonical(where: str) -> str:
    if where == "clip":
        warnings.warn(f"where='clip' is deprecated: it is '{COND}' (the same place); 'clip' goes in the next release.",
                      DeprecationWarning, stacklevel=3)
        return COND
    return where


def _check_where(pipe, bundle: Bundle, where: str) -> str:
    """The probe name steering at `where` (clip.cond or a block) uses."""
    if where == COND:
        return clip_probe_name(bundle)
    blocks = _blocks(pipe)
    if where not in blocks:
        raise SdvizError(f"Cannot steer at '{where}'. Choose {COND} or one of: {', '.join(blocks)}.")
    if where not in bundle.probes:
        raise SdvizError(f"The bundle has no probe for '{where}'. Rebuild it with that representation.")
    return where


def steer_edit(bundle: Bundle, where: str, probe: str, attribute: str, strength: float, steps: list[int],
               num_steps: int) -> Edit:
    """The edit of one steer: at clip.cond one direction (the conditioning is read at every step); at a block, at
    each steered step the direction of the probe that serves it."""
    if where == COND:
        d = strength * steer_direction(bundle, probe, attribute)
        return shift({k: d for k in steps})
    return shift({k: strength * steer_direction(bundle, probe, attribute, live_step=k, live_steps=num_steps) for k in steps})


def _decode_last_step(bundle: Bundle, tr: Trace, row: int = 0) -> dict[str, dict[str, float]]:
    S = len(tr.timesteps)
    return bundle.decode(tr.at_step(row), S - 1, S)


def check_strength(strength, what: str = "The strength") -> float:
    """A steering strength as a float, or one SdvizError: it must be a finite number of at most MAX_STRENGTH rating
    units (ratings span a few units; 1e30 only overflows the model's float16/float32 activations into NaN)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise SdvizError(f"{what} must be a finite number (rating units, e.g. 2 or -2); got {strength!r}.")
    if abs(strength) > MAX_STRENGTH:
        raise SdvizError(f"{what} must lie between -{MAX_STRENGTH:g} and {MAX_STRENGTH:g} rating units (ratings span a few "
                         f"units; far larger shifts only overflow the model into NaN); got {strength:g}.")
    return float(strength)


def _check_count(steps, what: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise SdvizError(f"{what} is the number of denoising steps, a whole number from 1 to {MAX_STEPS}; got {steps!r}.")
    return steps


def steer(pipe, bundle: Bundle, prompt: str, *, attribute: str, strength: float, where: str = COND, at_steps=None,
          seed: int = 0, steps: int = 20, guidance: float = 7.5, num_steps: int | None = None,
          size: int | None = None) -> SteerResult:
    """Generate `prompt` twice with the same seed, the second time shifted along `attribute`'s probe direction by
    `strength` (rating units) at `where` (`clip.cond` or a block; "clip" is a deprecated alias of `clip.cond`), and
    decode both at the last step. strength 0 reproduces the original image bit for bit.

    steps: the number of denoising steps, as everywhere in sdviz. at_steps: the step indices k (0 = pure noise) at
    which to steer a block (default: every step). Deprecated for one release: `num_steps=` (now `steps=`), and a list
    passed as `steps=` (now `at_steps=`), which is what `steps` meant before. size: the image side in pixels (None: the model's own)."""
    if not isinstance(steps, int) or isinstance(steps, bool):
        if isinstance(steps, (list, tuple, range, set)) and at_steps is None:  # the old meaning of `steps`
            warnings.warn("steer(steps=[...]) is deprecated: step indices are at_steps=[...]; steps= is now the number "
                          "of denoising steps, as everywhere in sdviz.", DeprecationWarning, stacklevel=2)
            at_steps, steps = steps, 20 if num_steps is None else num_steps
            num_steps = None
    if num_steps is not None:
        warnings.warn("steer(num_steps=...) is deprecated: it is steps=..., the number of denoising steps.",
                      DeprecationWarning, stacklevel=2)
        steps = num_steps
    check_bundle_matches(bundle, pipe)
    where = _canonical(where)
    strength = check_strength(strength)
    steps = _check_count(steps)
    probe = _check_where(pipe, bundle, where)
    steered_steps = list(range(steps)) if at_steps is None else sorted({int(k) for k in at_steps})
    if not steered_steps or steered_steps[0] < 0 or steered_steps[-1] >= steps:
        raise SdvizError(f"Steps to steer must lie in 0..{steps - 1} (step 0 is pure noise) for a "
                         f"{steps}-step run; got at_steps={at_steps!r}.")
    edit = steer_edit(bundle, where, probe, attribute, strength, steered_steps, steps)
    common = dict(seeds=seed, steps=steps, guidance=guidance, height=size, width=size)
    original = trace(pipe, [prompt], **common)
    steered = trace(pipe, [prompt], edits={where: edit}, **common)
    before, after = _decode_last_step(bundle, original), _decode_last_step(bundle, steered)
    target, others = _changes(before, after, attribute)
    return SteerResult(prompt, attribute, strength, where, steered_steps, original, steered, before, after,
                       target, others)


# -- the measurement ---------------------------------------------------------------------------
def specificity(original: np.ndarray, steered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From readouts of W words, original [W, T] and steered along each attribute's direction [W, A=T, T]:
    (target [A]: mean over words of attribute a's change when steering a,
     others [A]: mean over words and the other attributes of |change| when steering a)."""
    delta = steered - original[:, None, :]  # [W, A, T]
    T = delta.shape[-1]
    eye = np.eye(T, dtype=bool)
    target = delta[:, eye].mean(0)
    others = np.abs(delta[:, ~eye].reshape(delta.shape[0], T, T - 1)).mean((0, 2)) if T > 1 else np.zeros(T)
    return target, others


def _directions(X: torch.Tensor, Y: np.ndarray) -> torch.Tensor:
    """[T, dim] unit directions (w / |w|^2 in feature units) of ridge probes fitted on X [n, dim] -> Y [n, T]."""
    probe = fit_ridge(X.double(), torch.as_tensor(Y))
    return torch.stack([_unit_direction(probe.weight[:, t], probe.std, f"attribute {t}") for t in range(Y.shape[1])])


def steer_eval(pipe, bundle: Bundle, features: dict[str, torch.Tensor], words: list[str], Y: np.ndarray, *,
               prompts: list[str], n_words: int = 6, strengths=(1.0, 2.0, 4.0), wheres=(COND, "unet.mid"),
               readout: str | None = None, steps: int = 6, guidance: float = 7.5, seed: int = 0,
               folds: int = 3, progress: bool = True) -> dict:
    """Steering specificity over `n_words` of the dataset's words (docs/steering.md).

    features: the build's feature cache (name -> [words, dim] or [words, trained steps, dim]) for `words`, with
    ratings Y [words, T] and `prompts` (the template filled). The evaluated words are split into `folds`; the
    probes giving the directions and the readout probe are refitted without the fold's words (cross-fitting),
    so no word is steered or read by a probe that saw it. For each word, strength and place, one batched run
    steers every attribute (one row each) plus, per attribute, a random direction of the same norm (control).
    The readout (default: the denoiser's last block) is decoded at the last step.
    """
    from tqdm.auto import tqdm

    check_bundle_matches(bundle, pipe)
    strengths = [check_strength(x, "Each strength") for x in strengths]
    if not strengths:
        raise SdvizError("Give at least one strength to steer with, e.g. 1,2,4.")
    steps = _check_count(steps)
    readout = readout or _blocks(pipe)[-1]
    wheres = [_canonical(w) for w in wheres]
    for where in wheres:
        _check_where(pipe, bundle, where)
    if readout not in features or not is_per_step(readout):
        raise SdvizError(f"The readout must be a per-step representation in the feature cache; got '{readout}'.")
    if readout in wheres:
        raise SdvizError(f"Steering at the readout '{readout}' itself measures nothing downstream: pick another --where.")
    if not 2 <= n_words <= len(words):
        raise SdvizError(f"--words must be from 2 to {len(words)}; got {n_words}.")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(words), size=n_words, replace=False))
    T = Y.shape[1]
    trained = features[readout].shape[1]
    if trained != bundle.meta["steps"]:
        raise SdvizError(f"The feature cache has {trained} steps per word but the bundle was trained with "
                         f"{bundle.meta['steps']}: pass the --cache of the build that made this bundle.")
    clip_name = clip_probe_name(bundle)
    per_word = {w: {str(s): {k: np.zeros((n_words, T)) for k in ("target", "others", "random_target", "random_others")}
                    for s in strengths} for w in wheres}
    bar = tqdm(total=n_words * len(wheres) * len(strengths), desc="steer-eval", unit="run", disable=not progress)
    for part in kfold(n_words, min(folds, n_words), seed):
        held = chosen[part]
        train = np.setdiff1d(np.arange(len(words)), held)
        last = trained - 1

        def fit(name, k=None, train=train):
            X = features[name][train] if k is None else features[name][train, k]
            return _directions(X, Y[train])

        read_probe = fit_ridge(features[readout][train, last].double(), torch.as_tensor(Y[train]))
        dirs = {}
        for where in wheres:
            if where == COND:  # the conditioning is read at every step: one direction for all of them
                one = fit(clip_name)
                dirs[where] = {k: one for k in range(steps)}
            else:  # at step k, the directions of the probe that serves it
                by_trained = {j: fit(where, j) for j in {bundle.trained_step(where, k, steps) for k in range(steps)}}
                dirs[where] = {k: by_trained[bundle.trained_step(where, k, steps)] for k in range(steps)}
        for i_word, w in zip(part, held):
            base = trace(pipe, [prompts[w]], seeds=seed, steps=steps, guidance=guidance, decode=False, layers=[readout])
            original = read_probe.predict(base.features[readout][:, -1].double()).numpy()[0]  # [T]
            for where in wheres:
                for s in strengths:
                    # control: per attribute one random direction, scaled at each step to the steering vector's norm
                    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(w))
                    noise = torch.randn((T, dirs[where][0].shape[1]), generator=g)
                    noise = noise / noise.norm(dim=1, keepdim=True)
                    by_step = {}
                    for k in range(steps):
                        D = dirs[where][k] * s  # [T, dim]
                        by_step[k] = torch.cat([D, noise * D.norm(dim=1, keepdim=True)])
                    run = trace(pipe, [prompts[w]] * (2 * T), seeds=seed, steps=steps, guidance=guidance, decode=False,
                                layers=[readout], edits={where: shift(by_step)})
                    read = read_probe.predict(run.features[readout][:, -1].double()).numpy()  # [2T, T]
                    target, others = specificity(original[None], read[None, :T])
                    r_target, r_others = specificity(original[None], read[None, T:])
                    slot = per_word[where][str(s)]
                    slot["target"][i_word], slot["others"][i_word] = target, others
                    slot["random_target"][i_word], slot["random_others"][i_word] = r_target, r_others
                    bar.update(1)
    bar.close()
    # per attribute (mean over words), and overall (mean over words and attributes)
    results = {w: {s: {key: [float(v) for v in values.mean(0)] for key, values in slot.items()} for s, slot in by.items()}
               for w, by in per_word.items()}
    summary = {w: {s: {key: float(values.mean()) for key, values in slot.items()} for s, slot in by.items()}
               for w, by in per_word.items()}
    return {
        "model": bundle.meta["model"], "readout": readout, "readout_step": steps - 1, "steps": steps,
        "guidance": guidance, "seed": seed, "folds": min(folds, n_words), "words": [words[i] for i in chosen],
        "attributes": list(bundle.attributes), "strengths": [float(s) for s in strengths], "wheres": wheres,
        "results": results, "summary": summary,
    }
