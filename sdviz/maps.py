"""2-D maps of all dataset words per representation x step: z-score -> PCA -> UMAP.

Each step's UMAP starts from the previous step's layout (a short refinement: FIRST_EPOCHS for a
representation's first map, LATER_EPOCHS after) and is then rotated onto it (Procrustes), so consecutive
maps are aligned and a word's dot travels between steps instead of the cloud reshuffling.
A new prompt is placed without refitting (UMAP models cannot be stored without pickle): at the
inverse-distance-weighted mean position of its 5 nearest words in PCA space, which is also how
UMAP's own `transform` initialises new points.
"""

import numpy as np
import torch

PCA_DIMS = 50
NEIGHBOURS = 15
PLACE_K = 5
FIRST_EPOCHS = 200
LATER_EPOCHS = 50


def _pca(Z: np.ndarray, dims: int) -> np.ndarray:
    """[d, m] principal axes of z-scored rows (deterministic sign)."""
    _, _, Vt = np.linalg.svd(Z, full_matrices=False)
    axes = Vt[: min(dims, Vt.shape[0])].T
    return axes * np.sign(axes[np.abs(axes).argmax(0), range(axes.shape[1])])


def _distances(points: np.ndarray) -> np.ndarray:
    """Euclidean distances between all rows (UMAP's own small-data path computes these pair by pair in Python)."""
    sq = (points**2).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * points @ points.T, 0))


def _align(coords: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Rotate/reflect centred coords onto the previous layout (orthogonal Procrustes)."""
    U, _, Vt = np.linalg.svd(coords.T @ previous)
    return coords @ (U @ Vt)


def build_maps(features: dict[str, torch.Tensor], names: list[str], *, seed: int = 0, progress: bool = True) -> dict:
    """{f"{name}.coords": [S, n, 2], .mean/.std: [S, d], .axes: [S, d, m], .points: [S, n, m]} as float32 tensors."""
    import warnings

    import umap  # heavy (numba): imported only when maps are built
    from tqdm.auto import tqdm

    jobs = [(n, s) for n in names for s in range(features[n].shape[1] if features[n].dim() == 3 else 1)]
    out: dict[str, list] = {}
    previous = {}
    for name, step in tqdm(jobs, desc="maps", unit="map", disable=not progress):
        X = features[name][:, step] if features[name].dim() == 3 else features[name]
        X = X.double().numpy()
        mean, std = X.mean(0), X.std(0)
        std = np.where(std > 1e-8, std, 1.0)
        Z = (X - mean) / std
        axes = _pca(Z, PCA_DIMS)
        points = Z @ axes
        first = name not in previous
        reducer = umap.UMAP(n_neighbors=NEIGHBOURS, min_dist=0.1, random_state=seed, metric="precomputed",
                            init="spectral" if first else previous[name], n_epochs=FIRST_EPOCHS if first else LATER_EPOCHS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seeded UMAP is single-threaded by design; precomputed metric notes
            coords = reducer.fit_transform(_distances(points))
        coords = (coords - coords.mean(0)) / (coords.std() + 1e-12)  # comparable scale across steps
        if not first:
            coords = _align(coords, previous[name])
        previous[name] = coords
        for key, value in (("coords", coords), ("mean", mean), ("std", std), ("axes", axes), ("points", points)):
            out.setdefault(f"{name}.{key}", []).append(torch.tensor(value, dtype=torch.float32))
    return {k: torch.stack(v) for k, v in out.items()}


def map_space(maps: dict[str, torch.Tensor], name: str, step: int, x: torch.Tensor) -> torch.Tensor:
    """A feature vector in the space map (name, step) is laid out from: z-scored per dimension with the dataset words'
    mean and spread, then projected on the map's PCA axes (the words' own `points` live there)."""
    mean, std = maps[f"{name}.mean"][step].double(), maps[f"{name}.std"][step].double()
    return ((x.double() - mean) / std) @ maps[f"{name}.axes"][step].double()


def map_distances(maps: dict[str, torch.Tensor], name: str, step: int, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(distance of a and b, median distance of two dataset words), both 1 - cosine in map (name, step)'s space
    (`map_space`): the scale on which the map draws things near or far. Raw CLIP states of any two prompts are nearly
    parallel (a large part shared by every prompt), so their raw distance is tiny; z-scoring removes the shared part."""
    pa, pb = map_space(maps, name, step, a), map_space(maps, name, step, b)
    d = 1.0 - float(torch.dot(pa, pb) / (pa.norm() * pb.norm()).clamp_min(1e-12))
    points = maps[f"{name}.points"][step].double()
    unit = points / points.norm(dim=1, keepdim=True).clamp_min(1e-12)
    i, j = torch.triu_indices(len(points), len(points), 1)
    typical = float((1.0 - (unit[i] * unit[j]).sum(1)).median())
    return d, typical


def place(maps: dict[str, torch.Tensor], name: str, step: int, x: torch.Tensor) -> tuple[float, float]:
    """Where a new feature vector lands on map (name, step)."""
    point = map_space(maps, name, step, x)
    dist = torch.linalg.norm(maps[f"{name}.points"][step].double() - point, dim=1)
    nearest = torch.argsort(dist)[:PLACE_K]
    weights = 1.0 / (dist[nearest] + 1e-9)
    xy = (maps[f"{name}.coords"][step].double()[nearest] * weights[:, None]).sum(0) / weights.sum()
    return float(xy[0]), float(xy[1])

