"""Plotly figures, pure functions: data in, figure out (`report` composes them into the report, the app shows them).

Every figure has axis labels, human names (`sdviz.labels`) with identifiers on hover, its chance level drawn and
labelled, and a legend that never covers axis labels. A figure takes its title as an argument: with `title=None` it
has none and reserves no room for one (the app writes titles as text around its figures, where they wrap).
One module per kind of chart: `curves`, `bars`, `heatmaps`, `wordmaps`, and `thesis` (the figures of the paper's
thesis: what the UNet adds beyond CLIP, entanglement); `style` holds what they share.
"""

from .bars import attribute_bars, group_bars, steer_figure
from .curves import (
    closeness_curve,
    decoding_curve,
    disambiguation_curve,
    distance_figure,
    lens_figure,
    metric_curve,
    separation_curve,
    steer_eval_figure,
    two_v_two_curve,
)
from .heatmaps import corr_heatmap
from .style import GREY, LEGEND_ROW_PX, TITLE_PX
from .thesis import entanglement_curve, matrix_animation, partition_curve
from .wordmaps import embedding_map, embedding_map_animation

__all__ = [
    "attribute_bars", "closeness_curve", "corr_heatmap", "decoding_curve", "disambiguation_curve", "distance_figure",
    "embedding_map", "embedding_map_animation", "entanglement_curve", "group_bars", "lens_figure", "matrix_animation",
    "metric_curve", "partition_curve", "separation_curve", "steer_eval_figure", "steer_figure", "two_v_two_curve", "GREY", "LEGEND_ROW_PX", "TITLE_PX",
]
